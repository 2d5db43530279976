"""Spark jobs over the extension's REST API, with the real spark-submit (pyspark's, Java 17).

Main files are written into the jupyter server's root folder (pytest-jupyter's, not this process's
working directory) and named as the file browser shows them. A job runs to COMPLETED and its logs
come back; a long one is cancelled; bad input is refused naming the field and starts nothing.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from mlplatform.spark import TERMINAL_STATES, LocalSparkBackend

from ..support.processes import processes_with
from .rest_fixtures import UNAUTHENTICATED, refused, send
from .rest_fixtures import api_fixture, server_config_fixture  # noqa: F401  (fixtures api, jp_server_config)

SMALL = {"driver_memory": "512m"}  # a 2-core test machine

QUICK = """
    import sys
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    print("sum:", spark.range(101).groupBy().sum("id").first()[0], "args:", *sys.argv[1:])
    spark.stop()
"""

LONG = """
    import time
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    print("long job started", flush=True)
    spark.sparkContext.parallelize(range(2), 2).map(lambda x: time.sleep(600)).collect()
"""


def write(path: Path, code: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


@pytest.fixture
def jobs(jp_home_dir):
    """The applications of this test (the server's user keeps them under ~/.mlplatform/spark, and HOME is
    pytest-jupyter's); any still running at the end is cancelled, so no JVM outlives the test."""
    backend = LocalSparkBackend(jp_home_dir / ".mlplatform" / "spark", cancel_grace=5)
    yield backend
    for app in backend.applications():
        if app["state"] not in TERMINAL_STATES:
            backend.cancel(app["app_id"])


def wait_for(api, app_id: str, done, timeout: float = 180) -> dict:
    """The status once `done(status)`, polled over REST."""
    deadline = time.monotonic() + timeout
    while True:
        status = send(api, "GET", "spark", app_id)
        if done(status):
            return status
        assert time.monotonic() < deadline, f"{app_id} still {status['state']}:\n" \
                                            + send(api, "GET", "spark", app_id, "logs", params={"tail": "40"})["text"]
        time.sleep(0.5)


@pytest.mark.parametrize("method,route,body", [
    ("GET", ("spark",), None),
    ("POST", ("spark",), {"name": "quick", "main_file": "quick.py"}),
    ("GET", ("spark", "quick-1234abcd"), None),
    ("GET", ("spark", "quick-1234abcd", "logs"), None),
    ("DELETE", ("spark", "quick-1234abcd"), None),
])
def test_unauthenticated_spark_requests_are_refused(api, method, route, body):
    code, answer = refused(api, method, *route, body=body, headers=dict(UNAUTHENTICATED))
    assert code == 403, answer


def test_submit_runs_to_completed_and_its_logs_come_back(api, jobs, jp_root_dir, jp_base_url):
    write(jp_root_dir / "jobs" / "quick.py", QUICK)
    r = api("mlplatform", "api", "spark", method="POST", body=json.dumps(
        {"name": "quick", "main_file": "jobs/quick.py", "arguments": ["hello", 7], **SMALL}))
    submitted = json.loads(r.body)
    app_id = submitted["app_id"]
    assert r.code == 201 and r.headers["Location"] == f"{jp_base_url}mlplatform/api/spark/{app_id}"
    assert app_id.startswith("quick-") and submitted["state"] in ("SUBMITTED", "RUNNING")
    # Found in the server's root folder, not in this process's working directory.
    assert submitted["job"]["main_file"] == str((jp_root_dir / "jobs" / "quick.py").resolve())
    assert submitted["job"]["arguments"] == ["hello", "7"] and submitted["job"]["driver_memory"] == "512m"

    final = wait_for(api, app_id, lambda s: s["state"] in TERMINAL_STATES)
    assert final["state"] == "COMPLETED" and final["error"] is None, final
    logs = send(api, "GET", "spark", app_id, "logs", params={"tail": "400"})
    assert "sum: 5050 args: hello 7" in logs["text"] and logs["app_id"] == app_id
    last = send(api, "GET", "spark", app_id, "logs", params={"tail": "1"})
    assert last["lines"] == 1 and last["truncated"] is True
    everything = send(api, "GET", "spark", app_id, "logs", params={"tail": "all"})
    assert everything["truncated"] is False and everything["lines"] > 1
    assert send(api, "GET", "spark", app_id, "logs")["lines"] == min(100, everything["lines"])  # the default
    assert [a["app_id"] for a in send(api, "GET", "spark")["applications"]] == [app_id]


def test_delete_cancels_a_running_job(api, jobs, jp_root_dir):
    write(jp_root_dir / "long.py", LONG)
    app_id = send(api, "POST", "spark", body={"name": "long", "main_file": "long.py", **SMALL})["app_id"]
    wait_for(api, app_id, lambda s: s["state"] in TERMINAL_STATES or "long job started" in
             send(api, "GET", "spark", app_id, "logs")["text"])
    assert processes_with(app_id), "the job runs"

    cancelled = send(api, "DELETE", "spark", app_id, request_timeout=60)
    assert cancelled["state"] == "CANCELLED" and cancelled["app_id"] == app_id
    assert processes_with(app_id) == []
    # The record stays: status and logs are still there, and a second DELETE changes nothing.
    assert send(api, "GET", "spark", app_id)["state"] == "CANCELLED"
    assert "long job started" in send(api, "GET", "spark", app_id, "logs", params={"tail": "all"})["text"]
    assert send(api, "DELETE", "spark", app_id)["state"] == "CANCELLED"


@pytest.fixture
def files(jp_root_dir, tmp_path):
    """A job inside the root folder, one outside it, and a link inside pointing outside."""
    write(jp_root_dir / "jobs" / "quick.py", QUICK)
    outside = write(tmp_path / "outside.py", QUICK)
    (jp_root_dir / "link.py").symlink_to(outside)
    return {"root": jp_root_dir.resolve(), "outside": outside}


@pytest.mark.parametrize("body,field,message", [
    ({"name": "quick", "main_file": "missing.py"}, "main_file",
     ("main_file: 'missing.py' does not exist (looked for {root}/missing.py); allowed: an existing .py file, "
      "relative to the server's root folder")),
    ({"name": "quick", "main_file": "../outside.py"}, "main_file",
     "main_file: '../outside.py' is outside the server's root folder {root}; allowed: a path inside it"),
    ({"name": "quick", "main_file": "{outside}"}, "main_file", "is outside the server's root folder"),
    ({"name": "quick", "main_file": "file://{outside}"}, "main_file", "is outside the server's root folder"),
    ({"name": "quick", "main_file": "link.py"}, "main_file", "main_file: 'link.py' is outside the server's root"),
    ({"name": "Quick_Job", "main_file": "jobs/quick.py"}, "name",
     "name: 'Quick_Job' is not a valid application name; use lowercase letters"),
    ({"name": "quick", "main_file": "jobs/quick.py", "executors": 0}, "executors",
     "executors: 0 is too small; use a whole number of at least 1"),
    ({"name": "quick", "main_file": "jobs/quick.py", "driver_memory": "2Gi"}, "driver_memory",
     "Kubernetes' 'Gi' is not Spark's syntax: write '2g'"),
    ({"name": "quick", "main_file": "jobs/quick.py", "conf": {"spark.master": "yarn"}}, "conf",
     "conf: 'spark.master' cannot be set here: it is set by the platform's backend"),
    ({"name": "quick", "main_file": "jobs/quick.py", "executor": 2}, "executor",
     ("unknown field 'executor'; allowed fields: 'name', 'main_file', 'arguments', 'executors', 'executor_cores', "
      "'executor_memory', 'driver_cores', 'driver_memory', 'conf' (required: 'name', 'main_file')")),
    ({"name": "quick"}, "main_file", "missing field 'main_file'; allowed fields: 'name'"),
    (["quick", "jobs/quick.py"], None, "the request body is a JSON list, not an object"),
])
def test_bad_submissions_are_refused_and_start_nothing(api, jobs, files, body, field, message):
    body = json.loads(json.dumps(body).replace("{outside}", str(files["outside"])))
    code, answer = refused(api, "POST", "spark", body=body)
    assert code == 400 and message.format(**files) in answer["message"], answer
    assert answer.get("field") == field
    assert send(api, "GET", "spark") == {"applications": []} and jobs.applications() == []


def test_unknown_application_is_404(api, jobs):
    for method, route in (("GET", ()), ("GET", ("logs",)), ("DELETE", ())):
        code, answer = refused(api, method, "spark", "nope-1234abcd", *route)
        assert code == 404 and "No Spark application 'nope-1234abcd'" in answer["message"], (method, route)
    for tail in ("0", "lots", "10001"):
        code, answer = refused(api, "GET", "spark", "nope-1234abcd", "logs", params={"tail": tail})
        assert code == 400 and answer["field"] == "tail"
        assert f"tail: {tail!r} is not allowed; give a whole number of lines from 1 to 10000, or 'all'" \
               == answer["message"]
