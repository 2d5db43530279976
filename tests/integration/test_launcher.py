"""`mlplatform-local up` as a user runs it: banner with URL and logins, clear errors, Ctrl-C stops everything."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..support.hub import PASSWORDS, UserSession

CLI = [str(Path(sys.executable).parent / "mlplatform-local"), "up"]
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "28000")) + 2000


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


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_prints_url_and_logins_and_ctrl_c_stops_every_process(tmp_path):
    ports = ["--hub-port", str(BASE), "--sso-port", str(BASE + 80), "--mlflow-port", str(BASE + 500),
             "--s3-port", str(BASE + 300)]
    proc = subprocess.Popen([*CLI, "--data-dir", str(tmp_path), *ports], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output = ""
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in output and time.monotonic() < deadline and proc.poll() is None:
            output += proc.stdout.readline()
        assert f"JupyterHub   http://127.0.0.1:{BASE}" in output, output
        assert re.search(r"alice / alice-pw +— team-vision", output)
        assert re.search(r"eve +/ eve-pw +— contractors \(in no team: refused\)", output)

        # A user's notebook server is one of the processes Ctrl-C must stop.
        alice = UserSession(f"http://127.0.0.1:{BASE}", "alice")
        alice.login(PASSWORDS["alice"])
        assert alice.start(profile="cpu").status_code in (201, 202)
        alice.wait_ready()
        started = descendants(proc.pid)
        assert len(started) >= 6  # provider, MLflow (2), S3 server, hub, proxy, notebook server

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert "Stopped every process of the local platform." in rest
        assert [pid for pid in started if alive(pid)] == []
        for port in (BASE, BASE + 1, BASE + 81, BASE + 80, BASE + 500, *range(BASE + 300, BASE + 308)):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    finally:
        if proc.poll() is None:
            proc.kill()


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
