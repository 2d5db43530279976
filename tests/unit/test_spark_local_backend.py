"""The local backend's bookkeeping, fast: input checks before anything starts, ids, the command line, log
tails, and the state machine driven by real processes. Where a test needs a process that behaves in a
particular way (ignores SIGTERM, dies from outside), a small shell script stands in for spark-submit,
passed through the backend's `spark_submit` parameter; the real spark-submit runs in
tests/integration/test_spark_local.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlplatform import localhost
from mlplatform.spark import LocalSparkBackend, SparkBackendError, SparkJob, SparkJobError, UnknownApplicationError
from mlplatform.spark.local import tail_lines
from mlplatform.spark.spec import APP_ID_VARIABLE


def stand_in(tmp_path: Path, script: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spark-submit"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(0o755)
    return path


def wait_for(backend, app_id, states, timeout=20):
    deadline = time.monotonic() + timeout
    while (status := backend.status(app_id))["state"] not in states:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


@pytest.fixture
def main_file(tmp_path):
    path = tmp_path / "job.py"
    path.write_text("print('hello')\n")
    return path


def test_missing_main_file_is_an_error_before_anything_starts(tmp_path):
    backend = LocalSparkBackend(tmp_path / "state", cwd=tmp_path)
    with pytest.raises(SparkJobError) as info:
        backend.submit(SparkJob(name="wordcount", main_file="notebooks/wordcount.py"))
    assert info.value.field == "main_file"
    assert str(info.value) == (f"main_file: 'notebooks/wordcount.py' does not exist (looked for "
                               f"{tmp_path}/notebooks/wordcount.py); give the path of an existing .py file, "
                               "relative to the notebook's folder or absolute")
    assert not (tmp_path / "state").exists()


def test_without_java_nothing_starts(tmp_path, main_file):
    backend = LocalSparkBackend(tmp_path / "state", environ={"PATH": str(tmp_path)})
    with pytest.raises(SparkBackendError, match=r"^Local Spark jobs need Java 17: no `java` on PATH and JAVA_HOME "
                                                r"is not set$"):
        backend.submit(SparkJob(name="wordcount", main_file=str(main_file)))
    assert not (tmp_path / "state").exists()


def test_command_line(tmp_path, main_file):
    backend = LocalSparkBackend(tmp_path, spark_submit="/opt/pyspark/bin/spark-submit")
    job = SparkJob(name="wordcount", main_file="job.py", arguments=["in.txt", "--top", "3"], executors=64,
                   executor_cores=4, driver_memory="2g", conf={"spark.sql.shuffle.partitions": 4})
    assert backend.command(job, main_file, 41234) == [
        "/opt/pyspark/bin/spark-submit", "--master", f"local[{os.cpu_count()}]", "--name", "wordcount",
        "--driver-memory", "2g", "--conf", "spark.ui.port=41234", "--conf", "spark.sql.shuffle.partitions=4",
        str(main_file), "in.txt", "--top", "3"]
    single = SparkJob(name="wordcount", main_file="job.py", conf={"spark.ui.enabled": False})
    assert backend.command(single, main_file, None)[:8] == [
        "/opt/pyspark/bin/spark-submit", "--master", "local[1]", "--name", "wordcount", "--driver-memory", "1g",
        "--conf"]


def test_unknown_application(tmp_path):
    backend = LocalSparkBackend(tmp_path)
    for bad in ("wordcount-00000000", "../../etc/passwd", "", "UPPER"):
        with pytest.raises(UnknownApplicationError, match="No applications yet"):
            backend.status(bad)
    with pytest.raises(UnknownApplicationError):
        backend.cancel("wordcount-00000000")
    with pytest.raises(UnknownApplicationError):
        backend.logs("wordcount-00000000")
    assert backend.applications() == []


def test_tail_lines(tmp_path):
    log = tmp_path / "driver.log"
    log.write_text("".join(f"line {i} " + "x" * 100 + "\n" for i in range(5000)))
    lines, truncated = tail_lines(log, 3)
    assert [line.split()[1] for line in lines] == ["4997", "4998", "4999"] and truncated
    lines, truncated = tail_lines(log, 1000)  # more than one read from the end
    assert len(lines) == 1000 and lines[0].startswith("line 4000 ") and truncated
    assert tail_lines(log, 6000)[0] == tail_lines(log, None)[0] and tail_lines(log, 6000)[1] is False
    assert tail_lines(tmp_path / "missing.log", 10) == ([], False)


def test_states_exit_code_error_line_and_ui_link(tmp_path, main_file):
    script = stand_in(tmp_path, """\
        echo "INFO SparkContext: Running Spark version 4.3.0"
        echo "INFO Utils: Successfully started service 'SparkUI' on port 4321."
        while [ ! -e "$(dirname "$0")/go" ]; do sleep 0.05; done
        echo "Traceback (most recent call last):"
        echo "ValueError: column 'age' has negative values"
        echo "INFO SparkContext: Successfully stopped SparkContext"
        exit 3
    """)
    backend = LocalSparkBackend(tmp_path / "state", spark_submit=script, user="alice")
    app_id = backend.submit(SparkJob(name="stand-in", main_file=str(main_file)))["app_id"]
    running = wait_for(backend, app_id, {"RUNNING"})
    assert (running["ui_url"], running["message"]) == ("http://127.0.0.1:4321", "running on local[1]")
    (tmp_path / "go").touch()
    failed = wait_for(backend, app_id, {"COMPLETED", "FAILED"})
    assert {k: failed[k] for k in ("state", "exit_code", "error", "message", "ui_url")} == {
        "state": "FAILED", "exit_code": 3, "error": "ValueError: column 'age' has negative values",
        "message": "spark-submit exited with code 3; the driver log has the details", "ui_url": None}
    assert backend.logs(app_id, tail=2) == {
        "app_id": app_id, "lines": 2, "truncated": True,
        "text": "ValueError: column 'age' has negative values\nINFO SparkContext: Successfully stopped SparkContext"}
    for tail in (0, -1, 10_001, "5", True):
        with pytest.raises(SparkJobError, match=r"^tail: .* is not allowed; give a whole number of lines from 1 to "
                                                r"10000, or None for the whole log$"):
            backend.logs(app_id, tail=tail)


def test_output_is_spark_submits_stdout_and_the_driver_log_has_both_streams(tmp_path, main_file):
    # As spark-submit runs a PySpark program: log4j records on stderr, the program's prints on stdout.
    script = stand_in(tmp_path, """\
        echo "26/12/02 07:55:46 INFO SparkContext: Running Spark version 4.3.0" >&2
        echo "rows: 3"
        echo "26/12/02 07:56:11 INFO SparkContext: Starting job: count at job.py:4" >&2
        echo "sum: 5050"
        echo "26/12/02 07:56:14 INFO SparkContext: Successfully stopped SparkContext" >&2
    """)
    backend = LocalSparkBackend(tmp_path / "state", spark_submit=script)
    app_id = backend.submit(SparkJob(name="prints", main_file=str(main_file)))["app_id"]
    assert wait_for(backend, app_id, {"COMPLETED", "FAILED"})["state"] == "COMPLETED"
    assert backend.output(app_id) == {"app_id": app_id, "text": "rows: 3\nsum: 5050", "lines": 2, "truncated": False}
    assert backend.output(app_id, tail=1)["text"] == "sum: 5050" and backend.output(app_id, tail=1)["truncated"]
    log = backend.logs(app_id)["text"].splitlines()
    assert len(log) == 5 and {"rows: 3", "sum: 5050"} < set(log)
    with pytest.raises(SparkJobError, match=r"^tail: "):
        backend.output(app_id, tail=0)


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path, main_file):
    script = stand_in(tmp_path, """\
        trap '' TERM
        echo "INFO SparkContext: Running Spark version 4.3.0"
        sleep 600
    """)
    backend = LocalSparkBackend(tmp_path / "state", spark_submit=script, cancel_grace=0.5)
    app_id = backend.submit(SparkJob(name="stubborn", main_file=str(main_file),
                                     conf={"spark.ui.enabled": "false"}))["app_id"]
    assert wait_for(backend, app_id, {"RUNNING"})["ui_url"] is None  # UI off: RUNNING from the driver's line
    pgid = json.loads((tmp_path / "state" / app_id / "app.json").read_text())["pid"]
    started = time.monotonic()
    cancelled = backend.cancel(app_id)
    assert cancelled["state"] == "CANCELLED" and time.monotonic() - started < 5
    # Killed, the shell and its sleep are orphans: the group is empty once init has collected them.
    deadline = time.monotonic() + 10
    with pytest.raises(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)
            time.sleep(0.05)
    assert backend.cancel(app_id) == cancelled


def test_a_supervisor_killed_from_outside_reads_failed(tmp_path, main_file):
    script = stand_in(tmp_path, "sleep 600\n")
    backend = LocalSparkBackend(tmp_path / "state", spark_submit=script)
    submitted = backend.submit(SparkJob(name="doomed", main_file=str(main_file)))
    assert submitted["state"] == "SUBMITTED" and submitted["message"] == "starting spark-submit on local[1]"
    os.killpg(json.loads((tmp_path / "state" / submitted["app_id"] / "app.json").read_text())["pid"], signal.SIGKILL)
    failed = wait_for(LocalSparkBackend(tmp_path / "state"), submitted["app_id"], {"FAILED"})
    assert failed["message"] == ("the job's supervisor ended without recording a result (killed outside "
                                 "mlplatform, or the machine restarted)")


def test_ids_are_unique_and_listed_newest_first(tmp_path, main_file):
    backend = LocalSparkBackend(tmp_path / "state", spark_submit=stand_in(tmp_path, "exit 0\n"))
    ids = [backend.submit(SparkJob(name="same", main_file=str(main_file)))["app_id"] for _ in range(3)]
    assert len(set(ids)) == 3
    statuses = [wait_for(backend, i, {"COMPLETED"}) for i in ids]
    assert {s["message"] for s in statuses} == {"finished successfully"}
    listed = backend.applications()
    assert sorted(a["app_id"] for a in listed) == sorted(ids)
    assert [a["submitted_at"] for a in listed] == sorted((a["submitted_at"] for a in listed), reverse=True)
    with pytest.raises(UnknownApplicationError, match=r"Recent ones: same-"):
        backend.status("same-00000000")


def test_stop_all_stops_every_running_job_of_the_platforms_homes(tmp_path, main_file):
    """What the local platform runs when it stops: jobs outlive their servers, not the platform."""
    homes = tmp_path / "home"
    quiet = stand_in(tmp_path / "quiet", "sleep 600\n")
    stubborn = stand_in(tmp_path / "stubborn", "trap '' TERM\nsleep 600\n")
    alice = LocalSparkBackend(homes / "alice" / ".mlplatform" / "spark", spark_submit=quiet)
    bob = LocalSparkBackend(homes / "bob" / ".mlplatform" / "spark", spark_submit=stubborn)
    elsewhere = LocalSparkBackend(tmp_path / "other-platform" / "carol", spark_submit=quiet)  # not this platform's
    done = LocalSparkBackend(alice.state_dir, spark_submit=stand_in(tmp_path / "done", "exit 0\n"))
    finished = done.submit(SparkJob(name="finished", main_file=str(main_file)))["app_id"]
    wait_for(done, finished, {"COMPLETED"})
    running = {alice.submit(SparkJob(name="etl", main_file=str(main_file)))["app_id"]: alice,
               bob.submit(SparkJob(name="training", main_file=str(main_file)))["app_id"]: bob}
    spared = elsewhere.submit(SparkJob(name="etl", main_file=str(main_file)))["app_id"]
    try:
        result = subprocess.run([sys.executable, "-m", "mlplatform.spark.local_cli", "stop-all", f"--homes={homes}",
                                 "--grace=0.5"], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("stopped 2 local Spark job(s): ")
        assert sorted(result.stdout.strip().split(": ")[1].split(", ")) == sorted(running)
        for app_id, backend in running.items():
            status = backend.status(app_id)
            assert status["state"] == "CANCELLED", status
            assert status["message"].endswith(" (stopped with the local platform)")
            assert localhost.tagged(APP_ID_VARIABLE, app_id) == {}  # the stubborn one too: SIGKILL
        assert done.status(finished)["state"] == "COMPLETED"
        assert elsewhere.status(spared)["state"] == "SUBMITTED"
    finally:
        for app_id, backend in [*running.items(), (spared, elsewhere)]:
            backend.cancel(app_id)


def test_stop_server_stops_only_the_jobs_of_that_users_server(tmp_path, main_file):
    """What the hub runs when a server stops: its jobs go, those of the user's other servers stay."""
    home = tmp_path / "home" / "alice"
    quiet = stand_in(tmp_path / "quiet", "sleep 600\n")

    def backend(server: str | None, user: str = "alice") -> LocalSparkBackend:
        environ = {**os.environ, "MLPLATFORM_USER": user}
        environ.pop("JUPYTERHUB_SERVER_NAME", None)
        if server is not None:
            environ["JUPYTERHUB_SERVER_NAME"] = server
        return LocalSparkBackend(home / ".mlplatform" / "spark", spark_submit=quiet, environ=environ)

    default = backend("")
    jobs = {"default": default.submit(SparkJob(name="etl", main_file=str(main_file)))["app_id"],
            "outside a server": backend(None).submit(SparkJob(name="etl", main_file=str(main_file)))["app_id"],
            "gpu server": backend("gpu").submit(SparkJob(name="etl", main_file=str(main_file)))["app_id"],
            "bob's": backend("", "bob").submit(SparkJob(name="etl", main_file=str(main_file)))["app_id"]}
    try:
        result = subprocess.run([sys.executable, "-m", "mlplatform.spark.local_cli", "stop-server", f"--home={home}",
                                 "--user=alice", "--server=", "--grace=0.5"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        stopped = sorted(result.stdout.strip().split(": ")[1].split(", "))
        assert stopped == sorted([jobs["default"], jobs["outside a server"]])
        states = {what: default.status(app_id) for what, app_id in jobs.items()}
        assert {what: s["state"] for what, s in states.items()} == {
            "default": "CANCELLED", "outside a server": "CANCELLED", "gpu server": "SUBMITTED", "bob's": "SUBMITTED"}
        assert states["default"]["message"].endswith(" (stopped with its notebook server)")
        assert localhost.tagged(APP_ID_VARIABLE, jobs["default"]) == {}

        refused = subprocess.run([sys.executable, "-m", "mlplatform.spark.local_cli", "stop-server", f"--home={home}"],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode == 2 and "stop-server needs --user and --server" in refused.stderr
    finally:
        for app_id in jobs.values():
            default.cancel(app_id)


INTERLEAVED = """
import sys, time
for piece in ("sum:", " ", "5050", " ", "app:", " ", "x"):  # what an unbuffered print() writes, piece by piece
    sys.stdout.write(piece); sys.stdout.flush(); time.sleep(0.05)
    sys.stderr.write("26/12/03 INFO DAGScheduler: a log4j line\\n"); sys.stderr.flush()
sys.stdout.write("\\n"); sys.stdout.flush()
sys.stdout.write("no newline at the end"); sys.stdout.flush()
"""


def test_the_driver_log_keeps_the_programs_lines_whole(tmp_path):
    """The supervisor (runner.py) copies the program's stdout into the driver log line by line, so Spark's log4j
    lines on stderr (the same file) never split a print; output.log keeps the stdout as it came."""
    from mlplatform.spark.local import RUNNER

    log = tmp_path / "driver.log"
    with open(log, "ab") as out:
        subprocess.run([sys.executable, str(RUNNER), str(tmp_path), "--", sys.executable, "-c", INTERLEAVED],
                       stdout=out, stderr=subprocess.STDOUT, check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert lines.count("26/12/03 INFO DAGScheduler: a log4j line") == 7
    assert "sum: 5050 app: x" in lines and lines[-1] == "no newline at the end", lines
    assert (tmp_path / "output.log").read_text() == "sum: 5050 app: x\nno newline at the end"
    assert json.loads((tmp_path / "exit.json").read_text())["exit_code"] == 0
