"""The local Spark backend with the real spark-submit (pyspark's, Java 17): jobs written by the tests run
to COMPLETED, FAILED and CANCELLED, and their state is read back from disk by fresh backends and processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from mlplatform import spark
from mlplatform.spark import LocalSparkBackend

from ..support.processes import processes_with
from ..support.spark_jobs import WORDCOUNT

SMALL = {"driver_memory": "512m"}  # two or three JVMs at a time on a 2-core test machine


FAILING = """
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    print("rows:", spark.range(3).count())
    raise RuntimeError("the input table is empty")
"""

# Tasks on both local threads sleep, so PySpark's worker daemon (which leaves the process group) runs too.
LONG = """
    import time
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    print("long job started", flush=True)
    spark.sparkContext.parallelize(range(2), 2).map(lambda x: time.sleep(600)).collect()
"""

QUICK = """
    import os
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    print("sum:", spark.range(101).groupBy().sum("id").first()[0], "app:", os.environ["MLPLATFORM_SPARK_APP_ID"])
    spark.stop()
"""


def write_job(folder: Path, name: str, code: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(code))
    return path


def wait_for(backend, app_id: str, states: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.status(app_id)
        if status["state"] in states:
            return status
        assert time.monotonic() < deadline, f"{app_id} still {status['state']} after {timeout}s:\n" \
                                            + backend.logs(app_id, tail=40)["text"]
        time.sleep(0.25)


def still_running(pid: int) -> bool:
    """Whether any thread of the process runs (a dead process its parent has not collected yet does not)."""
    try:
        return any((t / "stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
                   for t in Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False


@pytest.fixture
def backend(tmp_path):
    return LocalSparkBackend(tmp_path / "state", user="alice", cwd=tmp_path / "notebooks", cancel_grace=10)


def test_word_count_runs_to_completed_and_writes_its_output(backend, tmp_path):
    notebooks = tmp_path / "notebooks"
    write_job(notebooks, "wordcount.py", WORDCOUNT)
    (notebooks / "words.txt").write_text("the cat saw the dog\nthe dog ran\n")

    submitted = backend.submit(spark.SparkJob(name="wordcount", main_file="wordcount.py",
                                              arguments=["words.txt", "counts"], executors=2, **SMALL))
    app_id = submitted["app_id"]
    assert app_id.startswith("wordcount-") and submitted["state"] in {"SUBMITTED", "RUNNING"}
    final = wait_for(backend, app_id, {"COMPLETED", "FAILED"})

    assert {**final, "submitted_at": "T0", "finished_at": "T1"} == {
        "app_id": app_id, "name": "wordcount", "backend": "local", "user": "alice", "state": "COMPLETED",
        "submitted_at": "T0", "finished_at": "T1", "ui_url": None, "message": "finished successfully",
        "error": None, "master": "local[2]", "exit_code": 0,
        "log_file": str(tmp_path / "state" / app_id / "driver.log"),
        "job": {"name": "wordcount", "main_file": str(notebooks / "wordcount.py"),
                "arguments": ["words.txt", "counts"], "executors": 2, "executor_cores": 1,
                "executor_memory": "1g", "driver_cores": 1, "driver_memory": "512m", "conf": {}},
    }
    assert final["submitted_at"] <= final["finished_at"]
    json.dumps(final)  # what the REST API will send

    # Relative paths are relative to the main file's folder; the output is real.
    output = notebooks / "counts"
    assert (output / "_SUCCESS").exists()
    counts = dict(line.split("\t") for part in sorted(output.glob("part-*")) for line in part.read_text().splitlines())
    assert counts == {"the": "3", "cat": "1", "saw": "1", "dog": "2", "ran": "1"}
    log = backend.logs(app_id, tail=400)
    assert "distinct words: 5" in log["text"]
    assert "Running Spark version" in log["text"]
    assert [a["app_id"] for a in backend.applications()] == [app_id]


def test_failing_job_reports_failed_with_its_error_in_the_log_tail(backend, tmp_path):
    main = write_job(tmp_path / "jobs", "failing.py", FAILING)
    app_id = backend.submit(spark.SparkJob(name="failing", main_file=str(main), **SMALL))["app_id"]
    final = wait_for(backend, app_id, {"COMPLETED", "FAILED"})

    assert final["state"] == "FAILED"
    assert final["exit_code"] == 1
    assert final["error"] == "RuntimeError: the input table is empty"
    assert final["message"] == "spark-submit exited with code 1; the driver log has the details"
    tail = backend.logs(app_id, tail=40)  # the end of the log: the traceback, then Spark shutting down
    assert tail["lines"] == 40 and tail["truncated"] is True
    assert "Traceback (most recent call last):" in tail["text"]
    assert 'raise RuntimeError("the input table is empty")' in tail["text"]
    assert "RuntimeError: the input table is empty" in tail["text"]


def test_cancel_of_a_long_job_kills_every_process(backend, tmp_path):
    main = write_job(tmp_path / "jobs", "long.py", LONG)
    submitted = backend.submit(spark.SparkJob(name="long", main_file=str(main), executors=2, **SMALL))
    app_id = submitted["app_id"]
    pgid = json.loads((tmp_path / "state" / app_id / "app.json").read_text())["pid"]  # the supervisor's group
    try:
        running = wait_for(backend, app_id, {"RUNNING", "COMPLETED", "FAILED"})
        assert running["state"] == "RUNNING" and running["message"] == "running on local[2]"
        assert running["ui_url"].startswith("http://127.0.0.1:")
        # Wait until the tasks run in PySpark's worker daemon (a process outside the job's process group).
        deadline = time.monotonic() + 60
        while not any("pyspark.daemon" in p for p in processes_with(app_id)):
            assert time.monotonic() < deadline, processes_with(app_id)
            time.sleep(0.25)
        # The Spark UI link while it runs, served on loopback, shows the job.
        with urllib.request.urlopen(running["ui_url"] + "/jobs/", timeout=10) as response:
            page = response.read()
        assert response.status == 200 and b"Spark Jobs" in page and b"collect at" in page, page[:300]
        ui_url = running["ui_url"]

        job_pids = [int(line.split()[0]) for line in processes_with(app_id)]
        assert len(job_pids) >= 4  # supervisor, JVM, Python driver, worker daemon (and its workers)

        started = time.monotonic()
        cancelled = backend.cancel(app_id)
        assert time.monotonic() - started < 15
        assert [pid for pid in job_pids if still_running(pid)] == []

        assert cancelled["state"] == "CANCELLED"
        assert cancelled["message"].startswith("cancelled at ") and cancelled["finished_at"]
        assert cancelled["ui_url"] is None
        with pytest.raises(OSError):
            urllib.request.urlopen(ui_url, timeout=5)
        assert processes_with(app_id) == []
        # The process group empties once init has collected the orphaned JVM's exit status.
        deadline = time.monotonic() + 10
        with pytest.raises(ProcessLookupError):
            while time.monotonic() < deadline:
                os.killpg(pgid, 0)
                time.sleep(0.1)
        assert backend.cancel(app_id) == cancelled  # cancelling again changes nothing
        assert LocalSparkBackend(tmp_path / "state").status(app_id)["state"] == "CANCELLED"
    finally:
        for line in processes_with(app_id):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def test_status_survives_a_kernel_restart(tmp_path, monkeypatch):
    """A "kernel" (a separate Python process) submits through the API and exits at once; this process, with
    fresh backends only, follows the job from disk to COMPLETED."""
    home = tmp_path / "home"
    main = write_job(home / "notebooks", "quick.py", QUICK)
    env = {**os.environ, "HOME": str(home), "MLPLATFORM_BACKEND": "local", "MLPLATFORM_USER": "alice"}
    code = "import json, mlplatform.spark as s; print(json.dumps(s.submit('quick', 'quick.py', driver_memory='512m')))"
    kernel = subprocess.run([sys.executable, "-c", code], cwd=home / "notebooks", env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert kernel.returncode == 0, kernel.stderr
    submitted = json.loads(kernel.stdout)
    app_id = submitted["app_id"]
    assert submitted["state"] == "SUBMITTED" and submitted["user"] == "alice"

    # The kernel is gone; the job is not. The API in this process reads the same state (~/.mlplatform/spark).
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MLPLATFORM_BACKEND", "local")
    assert spark.status(app_id)["state"] in {"SUBMITTED", "RUNNING"}
    final = wait_for(LocalSparkBackend(), app_id, {"COMPLETED", "FAILED"})
    assert final["state"] == "COMPLETED"
    assert final["job"]["main_file"] == str(main)
    assert f"sum: 5050 app: {app_id}" in spark.logs(app_id, tail=400)["text"].splitlines()  # a whole line
    assert f"sum: 5050 app: {app_id}" in spark.output(app_id)["text"].splitlines()
    assert (home / ".mlplatform" / "spark" / app_id / "exit.json").exists()
    # And once more after another "restart".
    assert LocalSparkBackend(home / ".mlplatform" / "spark").status(app_id) == final
    assert [a["app_id"] for a in spark.applications()] == [app_id]
