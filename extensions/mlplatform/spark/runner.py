"""Supervisor of one local Spark job: runs spark-submit and records how it ended.

    python runner.py APP_DIR -- spark-submit ARGS...

The local backend starts it by path (standard library only) in a session of its own, so the job
survives the kernel or server that submitted it; stdout and stderr arrive already pointed at the
driver log. spark-submit's stdout (a PySpark program's own prints, warnings and tracebacks; Spark's
log4j records go to stderr) is copied to the driver log and to APP_DIR/output.log. It inherits the application's lock (APP_DIR/lock, flock'ed by the submitter) and holds
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
import threading

from mlplatform_core.timestamps import now

MAX_PARTIAL_LINE = 1 << 16  # bytes of a line without its newline held back from the driver log (a progress bar's \r)


def main(argv: list[str]) -> int:
    app_dir, separator, *command = argv
    assert separator == "--" and command, "usage: runner.py APP_DIR -- COMMAND..."
    try:
        # close_fds (the default): spark-submit and its children do not get the lock.
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    except OSError as e:
        print(f"mlplatform: could not start {command[0]}: {e}", file=sys.stderr, flush=True)
        code = 127
    else:
        # On SIGTERM (cancel signals the whole group) outlive spark-submit: pass it on, collect its exit.
        signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
        copy = threading.Thread(target=_copy_output, args=(proc.stdout.fileno(), app_dir), daemon=True)
        copy.start()
        code = proc.wait()
        copy.join(5)  # a process spark-submit left behind may hold the pipe: do not wait for it
    result = {"exit_code": code, "finished_at": now()}
    tmp = os.path.join(app_dir, "exit.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(app_dir, "exit.json"))
    return 0


def _copy_output(fd: int, app_dir: str) -> None:
    """spark-submit's stdout to output.log as it comes, and to the driver log (this process's stdout) in whole
    lines: an unbuffered print is one write per piece (PySpark's driver runs unbuffered), and Spark's log4j lines
    on stderr, in the same file, would land between the pieces ("sum:" <a log4j line> " 5050")."""
    pending = b""
    with open(os.path.join(app_dir, "output.log"), "ab") as output:
        while chunk := os.read(fd, 1 << 16):
            output.write(chunk)
            output.flush()
            pending += chunk
            end = pending.rfind(b"\n") + 1 or (len(pending) if len(pending) > MAX_PARTIAL_LINE else 0)
            if end:
                os.write(1, pending[:end])
                pending = pending[end:]
    if pending:
        os.write(1, pending)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
