"""`mlplatform-local up` as a user runs it: banner with URL and logins, clear errors, Ctrl-C stops everything
(the local Spark jobs of its users included). While it runs: the data directory is private, and each
secret is only in the environment of the component that uses it."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from mlplatform import localhost
from mlplatform.localhost import wait_until
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing
from mlplatform.spark import LocalSparkBackend, SparkJob
from mlplatform.spark.spec import APP_ID_VARIABLE

from ..support.hub import PASSWORDS, UserSession
from ..support.ray_head import runtime_directory_left

CLI = [str(Path(sys.executable).parent / "mlplatform-local"), "up"]
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 2000


def descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


# Which component a process belongs to: the first of its own and its ancestors' command lines that names one.
ROLES = (("jupyterhub-singleuser", "notebook server"), ("configurable-http-proxy", "proxy"),
         ("sso_provider.mjs", "sso"), ("mlplatform-service", "platform service"), ("mlflow", "mlflow"), ("weed", "s3"),
         ("hub_config.local.git_server", "git"), ("bin/jupyterhub", "hub"))


def role(proc: psutil.Process) -> str | None:
    for ancestor in (proc, *proc.parents()):
        command = " ".join(ancestor.cmdline())
        found = next((name for marker, name in ROLES if marker in command), None)
        if found:
            return found
    return None


def secrets_by_role(pids: set[int], secrets: dict[str, str]) -> dict[str, set[str]]:
    """{component: names of the secrets found in the environment of any of its processes}."""
    found: dict[str, set[str]] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            values = proc.environ().values()
            name = role(proc)
        except psutil.Error:  # ended meanwhile
            continue
        found.setdefault(name, set()).update(s for s, value in secrets.items() if any(value in v for v in values))
    return found


def environ_of(pid: int) -> dict[str, str]:
    try:
        return psutil.Process(pid).environ()
    except psutil.Error:  # ended meanwhile
        return {}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_prints_url_and_logins_and_ctrl_c_stops_every_process(tmp_path, tmp_path_factory):
    ports = ["--hub-port", str(BASE), "--sso-port", str(BASE + 80), "--mlflow-port", str(BASE + 500),
             "--s3-port", str(BASE + 300)]
    tmp_path.chmod(0o755)  # as an older version left its data directory
    spark_submit = tmp_path_factory.mktemp("spark") / "spark-submit"  # a stand-in: runs until stopped
    spark_submit.write_text("#!/bin/sh\nsleep 600\n")
    spark_submit.chmod(0o755)
    (spark_submit.parent / "etl.py").write_text("")
    job = None
    # Started with SIGINT ignored, as a background job of a script starts it: Ctrl-C must stop it all the same.
    proc = subprocess.Popen([*CLI, "--data-dir", str(tmp_path), *ports], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        output = ""
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in output and time.monotonic() < deadline and proc.poll() is None:
            output += proc.stdout.readline()
        assert f"JupyterHub   http://127.0.0.1:{BASE}" in output, output
        assert f"GitOps repo  http://127.0.0.1:{BASE + 83}/platform/gitops.git" in output
        assert re.search(r"alice / alice-pw +— team-vision", output)
        assert re.search(r"eve +/ eve-pw +— contractors \(in no team: refused\)", output)
        # The Ray head of model serving starts with the platform, not in a user's first deploy.
        assert f"Ray Serve    starting in the background on port {BASE + 600}" in output
        head = LocalRayHead(LocalRayConfig(port=BASE + 600, root=tmp_path / "ray"))

        # A user's notebook server is one of the processes Ctrl-C must stop.
        alice = UserSession(f"http://127.0.0.1:{BASE}", "alice")
        alice.login(PASSWORDS["alice"])
        assert alice.start(profile="cpu").status_code in (201, 202)
        alice.wait_ready()
        started = descendants(proc.pid)
        assert len(started) >= 6  # provider, MLflow, S3 server, hub, proxy, notebook server

        # The data directory (hub database, secrets, logs, MLflow store, S3 data, homes) is the platform's alone.
        assert tmp_path.stat().st_mode & 0o777 == 0o700
        # Each secret only where it is used: the hub moves its own into its config, so the proxy it starts
        # (a child, with a copy of the hub's environment) gets neither; the platform service's S3 identity passes
        # through the hub to the service alone, and so does its GitOps credential.
        secrets = json.loads((tmp_path / "secrets.json").read_text())
        service = {"s3_service_access_key", "s3_service_secret_key", "gitops_token"}
        assert secrets_by_role(started, secrets) == {"hub": {"client_secret", "crypt_key", *service},
                                                     "platform service": service, "sso": {"client_secret"},
                                                     "mlflow": set(), "s3": set(), "git": set(), "proxy": set(),
                                                     "notebook server": set()}
        assert wait_until(head.running, 120), (tmp_path / "logs" / "ray-head-start.log").read_text()
        # Serve's controller is started with the head, not by the first deploy (9 s of it).
        def serve_started():  # a busy dashboard (a loaded machine) may take longer than a request's timeout
            try:
                return head.session().get(f"{head.config.dashboard_url}/api/serve/applications/",
                                          timeout=10).json()["controller_info"]
            except requests.RequestException:
                return False

        assert wait_until(serve_started, 120), (tmp_path / "logs" / "ray-head-start.log").read_text()
        # `mlplatform-ray-head start` returns once the warm spare runs: the first deploy takes it over (local.py).
        head_start_log = tmp_path / "logs" / "ray-head-start.log"
        assert wait_until(lambda: "Ray head on port" in head_start_log.read_text(), 200), head_start_log.read_text()
        assert LocalServing(head.config).spare()["status"] == "RUNNING", head_start_log.read_text()
        # (`ray start` and `mlplatform-ray-head start` have exited meanwhile: the head runs on without them.)
        server = psutil.Process(next(pid for pid in started if environ_of(pid).get("JUPYTERHUB_USER") == "alice"))
        assert server.environ()["MLPLATFORM_RAY_DIR"] == str(tmp_path / "ray")  # the Ray root, in here

        # A Spark job of alice's (in her home's state folder, as her notebook submits it), in a session of its own ...
        jobs = LocalSparkBackend(tmp_path / "home" / "alice" / ".mlplatform" / "spark", spark_submit=spark_submit)
        job = jobs.submit(SparkJob(name="etl", main_file=str(spark_submit.parent / "etl.py")))["app_id"]

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0
        assert "Stopped every process of the local platform." in rest
        assert [pid for pid in started if alive(pid)] == []
        assert head.processes() == [] and not head.running()
        assert runtime_directory_left(head) is None  # its sockets' folder in /tmp went with it
        # ... is stopped with the platform: it keeps no GPU the hub has handed back.
        status = jobs.status(job)
        assert status["state"] == "CANCELLED" and status["message"].endswith("(stopped with the local platform)")
        assert localhost.tagged(APP_ID_VARIABLE, job) == {}
        job = None
        for port in (BASE, BASE + 1, BASE + 81, BASE + 80, BASE + 83, BASE + 500, *range(BASE + 300, BASE + 308)):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    finally:
        if proc.poll() is None:  # a failure above: the platform still stops everything it started
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
        if job is not None:
            jobs.cancel(job)


def test_invalid_catalog_starts_nothing(tmp_path):
    catalog = tmp_path / "platform.yaml"
    catalog.write_text("teams: {}\n")
    r = subprocess.run([*CLI, "--data-dir", str(tmp_path / "data"), "--catalog", str(catalog)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"invalid catalog {catalog}:" in r.stderr
    assert "  - sso: required key is missing" in r.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("flag", ["--hub-port", "--sso-port", "--mlflow-port", "--s3-port"])
def test_port_in_use_is_named(tmp_path, flag):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"--hub-port": BASE, "--sso-port": BASE + 80, "--mlflow-port": BASE + 500, "--s3-port": BASE + 300,
                 flag: port}
        args = [str(a) for pair in ports.items() for a in pair]
        r = subprocess.run([*CLI, "--data-dir", str(tmp_path), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"port {port} (" in r.stderr and "is already in use on 127.0.0.1; choose other ports" in r.stderr
