"""A team's rollout gateway as its pod runs it (`mlplatform-gateway`, mlplatform_service/gateway_pod.py), a real
process here: HAProxy in front of the team's endpoints, each found by DNS at KubeRay's `<name>-serve-svc.<namespace>`
(a DNS server standing in for the cluster's), and the evidence shipped with the pod's own S3 identity (a real S3
server, SeaweedFS) under the platform's prefix, of its team only; SIGTERM writes what the shipper holds, and the
process ends when HAProxy does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml
from mlplatform.serving.gateway import Gateway, Traffic
from mlplatform.serving.inference_log import read_window
from mlplatform_core.catalog import load_catalog

from hub_config.local import seaweedfs
from mlplatform_service.evidence import evidence_prefix
from mlplatform_service.gateway_pod import gateway_spec

from ..support.dns_server import dns_server
from ..support.seaweedfs_server import seaweedfs_server
from .test_rollout_gateway import Serve

ROOT = Path(__file__).resolve().parents[2]
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 5300  # … + 5399
REGION, BUCKET = "eu-central-1", "ml-platform-example"
GATEWAY, SERVE, DNS = BASE + 1, BASE + 2, BASE + 3
DNS_NAME = "iris-serve-svc.team-vision.svc.cluster.local"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"), BASE + 20, REGION, BUCKET) as (url, keys):
        yield url, keys


def pod_catalog(tmp_path: Path, s3_url: str, *, flush_seconds: float) -> Path:
    """The example catalog with S3 at `s3_url` and the inference log's batches every `flush_seconds`, written to
    `tmp_path` for the pod process (MLPLATFORM_CATALOG)."""
    data = yaml.safe_load((ROOT / "helm-values" / "platform.yaml").read_text())
    data["storage"]["s3"]["endpoint_url"] = s3_url
    data.setdefault("serving", {}).setdefault("inference_log", {}).update(batch_rows=1000, flush_seconds=flush_seconds)
    catalog = tmp_path / "platform.yaml"
    catalog.write_text(yaml.safe_dump(data))
    return catalog


@pytest.fixture
def pod(s3, tmp_path):
    """`mlplatform-gateway --team team-vision` with the example catalog's team and S3 at SeaweedFS; (process,
    its directory, the admin S3 client)."""
    url, keys = s3
    catalog = pod_catalog(tmp_path, url, flush_seconds=60)
    env = {**os.environ, "MLPLATFORM_CATALOG": str(catalog), "AWS_ACCESS_KEY_ID": keys["s3_access_key"],
           "AWS_SECRET_ACCESS_KEY": keys["s3_secret_key"]}
    directory = tmp_path / "run"
    serve = Serve(SERVE)
    with dns_server(DNS, {DNS_NAME: "127.0.0.1"}):
        proc = subprocess.Popen([sys.executable, "-m", "mlplatform_service.gateway_pod", "--team", "team-vision",
                                 "--listen", f"127.0.0.1:{GATEWAY}", "--directory", str(directory),
                                 "--nameserver", f"127.0.0.1:{DNS}", "--serve-port", str(SERVE)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 30
            while not admin(directory).running():
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.1)
            yield proc, directory, seaweedfs.admin_client(url, REGION, keys)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            # In a pod the container's end takes HAProxy with it; here a failed test's must go too.
            subprocess.run(["pkill", "-KILL", "-f", str(directory / "haproxy" / "haproxy.cfg")], check=False)
            serve.close()


def admin(directory: Path) -> Gateway:
    """The pod's gateway, through its admin socket (what its traffic map changes use)."""
    catalog = load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})
    return Gateway(directory / "haproxy", gateway_spec(catalog, "team-vision"))


def test_the_pod_fronts_its_teams_endpoints_and_ships_only_its_teams_evidence(pod):
    proc, directory, s3_admin = pod
    url = f"http://127.0.0.1:{GATEWAY}"
    r = requests.post(f"{url}/iris/predict", json={"inputs": [[1, 2]]}, timeout=10)
    assert (r.status_code, r.json(), "X-Rollout-Side" in r.headers) == (200, {"predictions": ["champion"]}, False)
    gone = requests.post(f"{url}/ocr/predict", json={}, timeout=10)  # no Service ocr-serve-svc in the namespace
    assert (gone.status_code, gone.json()) == (404, {"message": "no such endpoint"})

    # What the rollouts will set (the map, through the admin socket in the pod's directory): iris recorded for its
    # team; a line naming another team is not shipped, whatever the map says.
    gateway = admin(directory)
    gateway.set("iris", Traffic(team="team-vision", champion_version="3"))
    sent = {requests.post(f"{url}/iris/predict", json={"inputs": [[i, 0]]}, timeout=10).headers["X-Request-Id"]
            for i in range(5)}
    gateway.set("iris", Traffic(team="team-nlp", champion_version="3"))
    requests.post(f"{url}/iris/predict", json={"inputs": [[9, 9]]}, timeout=10).raise_for_status()

    proc.send_signal(signal.SIGTERM)  # the kubelet's stop: the batch (flush every 60 s) is written before the exit
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "the evidence written" in output
    now = datetime.now(UTC)
    df = read_window(s3_admin, BUCKET, evidence_prefix("platform", "team-vision"), "iris", now - timedelta(minutes=5),
                     now + timedelta(minutes=5))
    assert set(df["request_id"]) == sent and set(df["mode"]) == {"single"} and set(df["model_version"]) == {"3"}
    nlp = s3_admin.list_objects_v2(Bucket=BUCKET, Prefix=evidence_prefix("platform", "team-nlp"))
    assert nlp.get("KeyCount", 0) == 0
    assert not admin(directory).running()  # HAProxy went with it


def test_the_pod_ends_when_haproxy_does(pod):
    proc, directory, _ = pod
    while "listens on" not in proc.stdout.readline():  # its start is over (it probes the admin socket too)
        assert proc.poll() is None
    master = int(subprocess.run(["pgrep", "-f", f"{directory}/haproxy/haproxy.cfg"], capture_output=True, text=True
                                ).stdout.split()[0])
    os.kill(master, signal.SIGKILL)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "HAProxy exited" in output, output


def test_a_team_the_catalog_does_not_have_is_refused_naming_it(tmp_path):
    catalog = tmp_path / "platform.yaml"
    catalog.write_text((ROOT / "helm-values" / "platform.yaml").read_text())
    done = subprocess.run([sys.executable, "-m", "mlplatform_service.gateway_pod", "--team", "team-x"],
                          env={**os.environ, "MLPLATFORM_CATALOG": str(catalog)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "--team: 'team-x' is not a team of the catalog; allowed: team-nlp, team-vision" in done.stderr
