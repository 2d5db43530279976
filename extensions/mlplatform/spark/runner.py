"""Supervisor of one local Spark job: runs spark-submit and records how it ended.

    python runner.py APP_DIR -- spark-submit ARGS...

The local backend starts it by path (standard library only) in a session of its own, so the job
survives the kernel or server that submitted it; stdout and stderr arrive already pointed at the
driver log. It inherits the application's lock (APP_DIR/lock, flock'ed by the submitter) and holds
it for as long as it lives: any process can tell whether the job still runs, without trusting a pid.
When spark-submit exits it writes APP_DIR/exit.json. SIGTERM (cancel() sends it to the whole process
group) is passed on to spark-submit and the supervisor still waits for it, so its children are
collected by their own parents; after SIGKILL (cancel's last resort) orphans are left to init.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from mlplatform_core.timestamps import now


def main(argv: list[str]) -> int:
    app_dir, separator, *command = argv
    assert separator == "--" and command, "usage: runner.py APP_DIR -- COMMAND..."
    try:
        # close_fds (the default): spark-submit and its children do not get the lock.
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as e:
        print(f"mlplatform: could not start {command[0]}: {e}", file=sys.stderr, flush=True)
        code = 127
    else:
        # On SIGTERM (cancel signals the whole group) outlive spark-submit: pass it on, collect its exit.
        signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
        code = proc.wait()
    result = {"exit_code": code, "finished_at": now()}
    tmp = os.path.join(app_dir, "exit.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(app_dir, "exit.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
