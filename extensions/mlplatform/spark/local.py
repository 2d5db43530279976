"""The local Spark backend: `spark-submit --master local[N]` on this machine, state kept on disk.

Each application has a folder `<state_dir>/<app id>/` (default `~/.mlplatform/spark/`):

    app.json     the job, the command line, the UI port, the supervisor's pid (= its process group)
    driver.log   stdout and stderr of spark-submit (the driver's log and the job's prints)
    output.log   spark-submit's stdout alone (a PySpark program's own output), copied by the supervisor
    lock         flock'ed by the supervisor (runner.py) while the job runs
    exit.json    spark-submit's exit code, written by the supervisor when it ends
    cancel.json  written by cancel()

Status is read back from these files, so a restarted kernel, another kernel or the jupyter server
all see the same jobs. SUBMITTED becomes RUNNING when the driver log shows the SparkContext started.
Every process of a job carries MLPLATFORM_SPARK_APP_ID=<app id> in its environment; cancel() signals
the supervisor's process group and every such process (PySpark's worker daemon leaves the group),
SIGTERM first, SIGKILL after `cancel_grace` seconds. Jobs run in sessions of their own and outlive
the server that submitted them: cancel_all() stops every job of a state folder at once, which the
local platform does when it stops (`python -m mlplatform.spark.local_cli stop-all`), so no job keeps
GPUs the hub has handed back. A job records the user and the JupyterHub server (JUPYTERHUB_SERVER_NAME,
"" for the default server) it was submitted from; the hub stops a server's jobs when the server stops
(`local_cli stop-server`, cancel_all with `user` and `server`).

Audit: a submit that started its supervisor, and a cancel that stopped a running job, are reported to the
platform service (`platform_service.report`, target `spark:<team>/<app id>`), which records them as the
server's hub user; best effort, never failing the action. cancel_all reports nothing: the hub runs it when
it stops a server (its own `stop` record covers it) or when the platform stops, the server's token and the
service going with them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlplatform_core.names import annotation_key
from mlplatform_core.timestamps import now

from .. import localhost
from ..environment import read_environment
from ..gitops import GitOps, GitOpsRefused
from ..platform_service import report
from .backend import (CANCELLED, COMPLETED, FAILED, RUNNING, SUBMITTED, TERMINAL_STATES,
                      SparkBackendError, UnknownApplicationError, check_tail)
from .driver_log import job_output
from .job import SparkJob, is_app_id, local_main_file, new_app_id
from .spec import APP_ID_VARIABLE

logger = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")
LOG = "driver.log"
OUTPUT = "output.log"
DRIVER_STARTED = re.compile(rb"SparkContext: Running Spark version")
UI_STARTED = re.compile(rb"Successfully started service 'SparkUI' on port (\d+)")
LOG_HEAD_BYTES = 1 << 20  # where the driver's start-up lines are looked for
# A Python or Java exception line: "RuntimeError: ...", "py4j.protocol.Py4JJavaError: ...".
ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)(?::\s.*)?$")
SERVER_NAME_VARIABLE = "JUPYTERHUB_SERVER_NAME"  # set by JupyterHub: the server a job was submitted from

# Supervisors started by this process, reaped when their application is looked at (no zombies).
_children: dict[str, subprocess.Popen] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reap() -> None:
    for key, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[key]


def state_dir_of(home: Path) -> Path:
    """Where a user's jobs are kept by default: `<home>/.mlplatform/spark`."""
    return home / ".mlplatform" / "spark"


def default_spark_submit() -> Path | None:
    """bin/spark-submit of the installed pyspark (found without importing it), or None."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "spark-submit"


def tail_lines(path: Path, n: int | None) -> tuple[list[str], bool]:
    """The last `n` lines of a file (all with None), reading only as much of it as needed; and whether
    lines were left out."""
    if not path.exists():
        return [], False
    with open(path, "rb") as f:
        if n is None:
            return f.read().decode("utf-8", "replace").splitlines(), False
        pos = f.seek(0, os.SEEK_END)
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:], pos > 0 or len(lines) > n


class LocalSparkBackend:
    """Spark jobs as local processes. `state_dir` holds one folder per application (default
    `~/.mlplatform/spark`); `environ` is the environment jobs start from (default: this process's);
    relative main files are looked up in `cwd` (default: the current directory at submit time)."""

    name = "local"

    def __init__(self, state_dir: str | Path | None = None, *, user: str | None = None,
                 spark_submit: str | Path | None = None, environ: dict[str, str] | None = None,
                 cwd: str | Path | None = None, cancel_grace: float = 10.0, gitops: GitOps | None = None):
        self._state_dir = Path(state_dir) if state_dir else None
        self.environ = environ
        # GitOps mode (the catalog's `gitops`): each submit and cancel is first a commit of the SparkApplication
        # the Kubernetes backend would create (its main file `local://` on this machine); a refused commit runs
        # nothing.
        self.gitops = gitops
        self.user = user or read_environment(environ).acting_user
        self.spark_submit = Path(spark_submit) if spark_submit else default_spark_submit()
        self.cwd = cwd
        self.cancel_grace = cancel_grace

    @property
    def state_dir(self) -> Path:
        """The given folder, else ~/.mlplatform/spark of the current HOME."""
        return self._state_dir or state_dir_of(Path.home())

    # -- submit ------------------------------------------------------------------------------------

    def _check_tools(self, env: dict[str, str]) -> Path:
        if self.spark_submit is None or not self.spark_submit.is_file():
            raise SparkBackendError(f"spark-submit not found ({self.spark_submit or 'pyspark is not installed'}); "
                                    "install pyspark in the notebook's environment")
        java_home = env.get("JAVA_HOME")
        java = (java_home and Path(java_home, "bin", "java").exists()) or shutil.which("java", path=env.get("PATH"))
        if not java:
            raise SparkBackendError("Local Spark jobs need Java 17: no `java` on PATH and JAVA_HOME is not set")
        return self.spark_submit

    def _new_app_dir(self, name: str) -> tuple[str, Path]:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            app_id = new_app_id(name)
            try:
                (self.state_dir / app_id).mkdir(mode=0o700)
                return app_id, self.state_dir / app_id
            except FileExistsError:  # 1 in 4 billion per name: draw again
                continue

    def command(self, job: SparkJob, main_file: Path, ui_port: int | None) -> list[str]:
        """The spark-submit command line of `job`. Parallelism `local[N]`: executors × executor_cores
        threads, at most the machine's CPUs; executor memory does not apply locally."""
        threads = max(1, min(job.executors * job.executor_cores, os.cpu_count() or 1))
        conf = {"spark.ui.port": str(ui_port)} if ui_port else {}
        conf.update(job.conf)
        command = [str(self.spark_submit), "--master", f"local[{threads}]", "--name", job.name,
                   "--driver-memory", job.driver_memory]
        for key, value in conf.items():
            command += ["--conf", f"{key}={value}"]
        return command + [str(main_file), *job.arguments]

    def main_file(self, main_file: str) -> str:
        return str(local_main_file(main_file, self.cwd or os.getcwd()))

    def submit(self, job: SparkJob) -> dict[str, Any]:
        _reap()
        env = dict(os.environ if self.environ is None else self.environ)
        main_file = Path(self.main_file(job.main_file))
        spark_submit = self._check_tools(env)
        ui_enabled = job.conf.get("spark.ui.enabled", "true").lower() != "false"
        ui_port = _free_port() if ui_enabled and "spark.ui.port" not in job.conf else None
        command = self.command(job, main_file, ui_port)
        app_id, app_dir = self._new_app_dir(job.name)
        try:
            commit = self._commit(job, app_id, main_file)
        except BaseException:
            shutil.rmtree(app_dir, ignore_errors=True)
            raise
        env.update({
            "SPARK_HOME": str(spark_submit.parent.parent),  # the Spark of this spark-submit, not another
            "SPARK_LOCAL_IP": "127.0.0.1",  # driver, block manager and UI on loopback only
            APP_ID_VARIABLE: app_id,
        })
        env.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run the notebook's Python and packages
        env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        proc = None
        try:
            lock = os.open(app_dir / "lock", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)  # handed to the supervisor: held from before it starts
                with open(app_dir / LOG, "ab") as log:
                    proc = subprocess.Popen([sys.executable, str(RUNNER), str(app_dir), "--", *command],
                                            cwd=main_file.parent, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, pass_fds=(lock,),
                                            start_new_session=True)
            finally:
                os.close(lock)
            _children[str(app_dir)] = proc
            localhost.write_json(app_dir / "app.json", {
                "app_id": app_id, "name": job.name, "backend": self.name, "user": self.user,
                "server": env.get(SERVER_NAME_VARIABLE, ""),
                "submitted_at": now(), "job": {**job.to_dict(), "main_file": str(main_file)},
                "master": command[2], "ui_enabled": ui_enabled, "ui_port": ui_port, "pid": proc.pid,
                "working_dir": str(main_file.parent), "command": command,
            })
        except BaseException:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            shutil.rmtree(app_dir, ignore_errors=True)
            if commit:  # Git back to what it held (best effort: the failure is what the caller sees)
                self._commit_removal(app_id, "the local submit failed")
            raise
        self._report("submit", app_id, {"job": job.name, "master": command[2], "executors": job.executors,
                                        "executor_cores": job.executor_cores, "driver_memory": job.driver_memory,
                                        "server": env.get(SERVER_NAME_VARIABLE, "")})
        status = self.status(app_id)
        return {**status, "commit": commit["commit"]} if commit else status

    def _commit(self, job: SparkJob, app_id: str, main_file: Path) -> dict | None:
        """Commit the SparkApplication the Kubernetes backend would create for `job` (None outside GitOps mode)."""
        if self.gitops is None:
            return None
        from .kubernetes import KubernetesSparkBackend, KubernetesSparkConfig  # the Kubernetes client: GitOps only

        environment = read_environment(self.environ)
        catalog, team = environment.catalog(), environment.team
        config = KubernetesSparkConfig.for_catalog(catalog, KubernetesSparkConfig(
            namespace=catalog.teams[team].namespace, team=team, user=self.user, bucket=catalog.storage.s3.bucket,
            team_prefix=environment.s3_team_prefix))
        document = KubernetesSparkBackend(config, environment=environment).manifest(
            dataclasses.replace(job, main_file=f"local://{main_file}"), app_id=app_id)
        document["metadata"]["annotations"].update({annotation_key("submitted-at"): now(),
                                                    annotation_key("job"): json.dumps(job.to_dict())})
        try:
            return self.gitops.commit("spark", app_id, document,
                                      message=f"{job.name}: {main_file}, {job.executors} executor(s) on this machine")
        except GitOpsRefused as refused:
            raise SparkBackendError(f"the platform service did not commit the job ({refused.status}): {refused}; "
                                    "nothing was started") from None

    def _commit_removal(self, app_id: str, why: str) -> dict | None:
        """Commit the removal of the application's file (None outside GitOps mode or when Git has none)."""
        if self.gitops is None:
            return None
        try:
            return self.gitops.remove("spark", app_id, message=why)
        except GitOpsRefused as refused:
            if refused.status == 404:
                return None
            raise SparkBackendError(f"the platform service did not commit the cancel ({refused.status}): "
                                    f"{refused}; the job keeps running") from None

    # -- status ------------------------------------------------------------------------------------

    def _app_dir(self, app_id: str) -> Path:
        if is_app_id(app_id) and (self.state_dir / app_id / "app.json").is_file():
            return self.state_dir / app_id
        known = [a["app_id"] for a in self._records()][:5]
        raise UnknownApplicationError(f"No Spark application {app_id!r} in {self.state_dir}. "
                                      + (f"Recent ones: {', '.join(known)}" if known else "No applications yet."))

    def _records(self) -> list[dict[str, Any]]:
        if not self.state_dir.is_dir():
            return []
        records = [r for d in self.state_dir.iterdir() if is_app_id(d.name) and (r := localhost.read_json(d / "app.json"))]
        return sorted(records, key=lambda r: (r["submitted_at"], r["app_id"]), reverse=True)

    @staticmethod
    def _supervisor_alive(app_dir: Path) -> bool:
        try:
            fd = os.open(app_dir / "lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # releases the lock if we got it
        return False

    @staticmethod
    def _driver_start(app_dir: Path, ui_enabled: bool) -> tuple[bool, int | None]:
        """Whether the driver log shows the driver started (its UI, when enabled: so RUNNING comes with
        the UI link), and the UI's port (Spark moves on to the next one when the chosen one is taken)."""
        try:
            with open(app_dir / LOG, "rb") as f:
                head = f.read(LOG_HEAD_BYTES)
        except FileNotFoundError:
            return False, None
        ui = UI_STARTED.search(head)
        started = bool(ui) if ui_enabled else bool(DRIVER_STARTED.search(head))
        return started, int(ui.group(1)) if ui else None

    @staticmethod
    def _last_error(app_dir: Path) -> str | None:
        lines, _ = tail_lines(app_dir / LOG, 500)
        return next((line.strip() for line in reversed(lines) if ERROR_LINE.match(line.strip())), None)

    def status(self, app_id: str) -> dict[str, Any]:
        app_dir = self._app_dir(app_id)
        _reap()
        record = localhost.read_json(app_dir / "app.json")
        alive = self._supervisor_alive(app_dir)
        ended = localhost.read_json(app_dir / "exit.json")
        cancelled = localhost.read_json(app_dir / "cancel.json")
        master = record["master"]
        ui_url = error = exit_code = finished_at = None
        if alive:
            started, ui_port = self._driver_start(app_dir, record["ui_enabled"])
            state = RUNNING if started else SUBMITTED
            message = f"running on {master}" if started else f"starting spark-submit on {master}"
            ui_url = f"http://127.0.0.1:{ui_port}" if ui_port else None
            if cancelled:
                message = "cancelling"
        elif cancelled:
            state, finished_at = CANCELLED, cancelled.get("stopped_at", cancelled["requested_at"])
            message = f"cancelled at {cancelled['requested_at']}" + (f" ({cancelled['reason']})"
                                                                      if cancelled.get("reason") else "")
        elif ended:
            exit_code, finished_at = ended["exit_code"], ended["finished_at"]
            if exit_code == 0:
                state, message = COMPLETED, "finished successfully"
            elif exit_code < 0:
                state, message = FAILED, f"spark-submit was killed by signal {-exit_code}"
            else:
                state, message = FAILED, f"spark-submit exited with code {exit_code}; the driver log has the details"
            error = self._last_error(app_dir) if state == FAILED else None
        else:
            state, error = FAILED, self._last_error(app_dir)
            message = ("the job's supervisor ended without recording a result (killed outside mlplatform, or "
                       "the machine restarted)")
        return {
            "app_id": app_id, "name": record["name"], "backend": self.name, "user": record["user"],
            "state": state, "submitted_at": record["submitted_at"], "finished_at": finished_at,
            "ui_url": ui_url, "message": message, "error": error, "job": record["job"],
            "master": master, "exit_code": exit_code, "log_file": str(app_dir / LOG),
        }

    def applications(self) -> list[dict[str, Any]]:
        return [self.status(r["app_id"]) for r in self._records()]

    def logs(self, app_id: str, tail: int | None = 100) -> dict[str, Any]:
        check_tail(tail)
        lines, truncated = tail_lines(self._app_dir(app_id) / LOG, tail)
        return {"app_id": app_id, "text": "\n".join(lines), "lines": len(lines), "truncated": truncated}

    def output(self, app_id: str, tail: int | None = 100) -> dict[str, Any]:
        check_tail(tail)
        lines, truncated = tail_lines(self._app_dir(app_id) / OUTPUT, tail)
        lines = job_output(lines)  # in case a log4j configuration writes to stdout
        return {"app_id": app_id, "text": "\n".join(lines), "lines": len(lines), "truncated": truncated}

    # -- cancel ------------------------------------------------------------------------------------

    def _ended(self, app_dir: Path, tracked: dict[int, float]) -> bool:
        if (child := _children.get(str(app_dir))) is not None:
            child.poll()  # reap our own supervisor
        return not any(localhost.running(pid, start) for pid, start in tracked.items()) \
            and not self._supervisor_alive(app_dir)

    def _terminate(self, jobs: dict[str, tuple[Path, int]]) -> None:
        """SIGTERM to every process of `jobs` ({app id: (folder, supervisor's process group)}), SIGKILL to
        the jobs left after `cancel_grace` seconds; returns once all have ended (SIGKILL: within 10 s)."""
        tracked: dict[str, dict[int, float]] = {app_id: {} for app_id in jobs}

        def left() -> list[str]:
            tagged = localhost.tagged_by(APP_ID_VARIABLE)  # one scan of the processes for every job
            for app_id in jobs:
                tracked[app_id].update(tagged.get(app_id, {}))
            return [app_id for app_id in jobs if not self._ended(jobs[app_id][0], tracked[app_id])]

        def send(sig: signal.Signals, app_ids: list[str]) -> None:
            for app_id in app_ids:
                # The supervisor is alive (or was a moment ago): the group is this job's.
                localhost.signal_group(jobs[app_id][1], sig)
                localhost.send(tracked[app_id], sig)

        send(signal.SIGTERM, left())
        if not localhost.wait_until(lambda: not left(), self.cancel_grace, interval=0.1):
            stubborn = left()
            logger.warning("Spark application(s) %s did not stop within %ss of SIGTERM; sending SIGKILL",
                           ", ".join(stubborn), self.cancel_grace)
            send(signal.SIGKILL, stubborn)
            localhost.wait_until(lambda: not left(), 10, interval=0.1)

    def _cancel(self, app_dirs: dict[str, Path], reason: str | None = None) -> list[str]:
        """Stop the jobs of `app_dirs` ({app id: folder}), all at once; the ids that were stopped."""
        requested = {"requested_at": now(), **({"reason": reason} if reason else {})}
        jobs = {}
        for app_id, app_dir in app_dirs.items():
            localhost.write_json(app_dir / "cancel.json", requested)
            if (app_dir / "exit.json").exists():  # it ended on its own meanwhile
                (app_dir / "cancel.json").unlink()
            else:
                jobs[app_id] = (app_dir, localhost.read_json(app_dir / "app.json")["pid"])
        self._terminate(jobs)
        for app_id, (app_dir, _) in jobs.items():
            _children.pop(str(app_dir), None)
            localhost.write_json(app_dir / "cancel.json", {**requested, "stopped_at": now()})
        return list(jobs)

    def cancel(self, app_id: str) -> dict[str, Any]:
        """SIGTERM to every process of the job (Spark stops its context, ~1 s), SIGKILL after `cancel_grace`
        seconds; returns once they have ended, so it blocks for a moment (a server runs it in a thread).
        A finished application is left as it is."""
        app_dir = self._app_dir(app_id)
        current = self.status(app_id)
        if current["state"] in TERMINAL_STATES:
            return current
        removal = self._commit_removal(app_id, f"cancelled from the notebook at {now()}")
        stopped = self._cancel({app_id: app_dir})
        if stopped:  # not when it ended on its own meanwhile
            self._report("cancel", app_id, {"job": current["name"], "state_before": current["state"]})
        status = self.status(app_id)
        return {**status, "commit": removal["commit"]} if removal else status

    def _report(self, action: str, app_id: str, details: dict) -> None:
        """Tell the platform service's audit log (best effort, never raises; nothing outside the platform)."""
        report(action, "spark", app_id, details=details, environ=self.environ)

    def cancel_all(self, reason: str | None = None, *, user: str | None = None,
                   server: str | None = None) -> list[str]:
        """Cancel every job of the state folder that still runs, all at once (as cancel() does one);
        with `user` / `server`, only the jobs submitted by that user / from that server (records
        older than the server field count as the default server's, ""). `reason` goes into their
        status message. The ids of the jobs stopped."""
        _reap()
        running = {r["app_id"]: self.state_dir / r["app_id"] for r in self._records()
                   if (user is None or r["user"] == user) and (server is None or r.get("server", "") == server)
                   and self._supervisor_alive(self.state_dir / r["app_id"])}
        return self._cancel(running, reason)
