"""A team's gateway pod (`mlplatform-gateway`, a real process) follows its traffic map on the Kubernetes API: the
fake API server holding what `mlplatform render` writes, so the gateways' Role and the hub's are the real ones, the
pod calling with the `mlplatform-gateway` account's token and the platform service's TrafficMaps with the hub's.
A map change routes the next requests within seconds and labels their evidence with the map's versions; mode off,
an endpoint taken out of the map, a bad entry and a deleted map each send the endpoint back to its champion; an API
server that fails at the pod's start is tried again while the gateway serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import kubernetes
import pytest
import requests
from mlplatform.serving.gateway import Traffic
from mlplatform.serving.inference_log import read_window
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig
from mlplatform.serving.rollout import rollout
from mlplatform.serving.spec import serving_request
from mlplatform_core.catalog import load_catalog
from mlplatform_core.names import gateway_traffic

from hub_config.local import seaweedfs
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.database import connect
from mlplatform_service.evidence import evidence_prefix
from mlplatform_service.kubernetes_rollouts import KubernetesRollouts
from mlplatform_service.rollouts import Rollouts
from mlplatform_service.traffic_maps import TrafficMaps

from ..support.dns_server import dns_server
from ..support.fake_kube import FakeKube
from ..support.gitops_service import caller
from ..support.promotion import Registry
from ..support.rendered_cluster import CATALOG, load_rendered_cluster
from ..support.seaweedfs_server import seaweedfs_server
from .test_gateway_pod import admin, pod_catalog
from .test_rollout_gateway import Serve

BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 5400  # … + 5499
REGION, BUCKET = "eu-central-1", "ml-platform-example"
GATEWAY, SERVE, DNS = BASE + 1, BASE + 2, BASE + 3
HUB = CATALOG.kubernetes.hub_namespace
MAP = gateway_traffic("team-vision")
SECONDS = 5  # a map change reaches the gateway within this


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"), BASE + 20, REGION, BUCKET) as (url, keys):
        yield url, keys


@pytest.fixture(scope="module")
def cluster():
    with FakeKube() as fake:
        load_rendered_cluster(fake)
        yield fake


def traffic_maps(fake: FakeKube) -> TrafficMaps:
    """The platform service's writer of the traffic maps, with the hub's token."""
    token = fake.token_for(service_account=f"{HUB}/hub")
    config = kubernetes.client.Configuration(host=fake.url, api_key={"authorization": f"Bearer {token}"})
    return TrafficMaps(kubernetes.client.ApiClient(config), HUB)


@pytest.fixture
def maps(cluster):
    """traffic_maps(cluster), with no map when a test starts."""
    if cluster.get("configmaps", MAP, HUB):
        cluster.delete("configmaps", MAP, HUB)
    return traffic_maps(cluster)


@pytest.fixture
def pod(s3, cluster, maps, tmp_path):
    """Start `mlplatform-gateway --team team-vision` (a function: the fake's faults are set before) with the
    example catalog, S3 at SeaweedFS and a kubeconfig of the gateways' account on `fake` (the module's cluster
    unless given); (process, its directory, the admin S3 client, the token)."""
    url, keys = s3
    catalog = pod_catalog(tmp_path, url, flush_seconds=2)  # the controller's test reads the evidence while it runs
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}  # this test's kubeconfig only
    env.update(MLPLATFORM_CATALOG=str(catalog), AWS_ACCESS_KEY_ID=keys["s3_access_key"],
               AWS_SECRET_ACCESS_KEY=keys["s3_secret_key"])
    directory = tmp_path / "run"
    serve = Serve(SERVE)
    procs = []

    def start(fake: FakeKube = cluster):
        token = fake.token_for(service_account=f"{HUB}/mlplatform-gateway")
        env["KUBECONFIG"] = str(fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=HUB, token=token))
        proc = subprocess.Popen([sys.executable, "-m", "mlplatform_service.gateway_pod", "--team", "team-vision",
                                 "--listen", f"127.0.0.1:{GATEWAY}", "--directory", str(directory),
                                 "--nameserver", f"127.0.0.1:{DNS}", "--serve-port", str(SERVE)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while not admin(directory).running():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.1)
        return proc, directory, seaweedfs.admin_client(url, REGION, keys), token

    with dns_server(DNS, {"iris-serve-svc.team-vision.svc.cluster.local": "127.0.0.1",
                          "ocr-serve-svc.team-vision.svc.cluster.local": "127.0.0.1"}):
        try:
            yield start
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            subprocess.run(["pkill", "-KILL", "-f", str(directory / "haproxy" / "haproxy.cfg")], check=False)
            serve.close()


def canary(share: float = 1.0) -> Traffic:
    return Traffic(team="team-vision", champion_version="3", candidate_version="4",
                   rollout=rollout(mode="canary", share=share))


def answers(endpoint: str = "iris") -> tuple[str, str]:
    """(who answered, the gateway's request id) of one prediction through the gateway."""
    r = requests.post(f"http://127.0.0.1:{GATEWAY}/{endpoint}/predict", json={"inputs": [[1, 2]]}, timeout=10)
    r.raise_for_status()
    return r.json()["predictions"][0], r.headers["X-Request-Id"]


def until_answered_by(side: str, endpoint: str = "iris") -> set[str]:
    """Ask until `side` answers (within SECONDS of a map change; a candidate gets traffic once found healthy), then
    5 more; the request ids `side` answered."""
    deadline = time.monotonic() + SECONDS
    while (answered := answers(endpoint))[0] != side:
        assert time.monotonic() < deadline, f"{endpoint} still answered by {answered[0]}, not {side}"
        time.sleep(0.1)
    more = [answers(endpoint) for _ in range(5)]
    assert {who for who, _ in more} == {side}
    return {answered[1]} | {rid for _, rid in more}


def test_the_pod_routes_by_its_teams_map_and_labels_the_evidence_with_its_versions(pod, maps, cluster):
    proc, directory, s3_admin, token = pod()
    assert until_answered_by("champion") and admin(directory).traffic() == {}  # no map: every endpoint passes

    maps.set("team-vision", "iris", canary())
    candidate = until_answered_by("candidate")
    maps.set("team-vision", "iris", Traffic(team="team-vision", champion_version="3", candidate_version="4",
                                            rollout=rollout(mode="off")))
    off = until_answered_by("champion")
    maps.set("team-vision", "iris", canary())
    candidate |= until_answered_by("candidate")
    maps.set("team-vision", "iris", None)  # the rollout is over
    champion = until_answered_by("champion")
    assert admin(directory).traffic() == {}

    # A bad entry is left out, so its endpoint passes through to its champion: iris's not JSON, ocr's another team's.
    maps.set("team-vision", "iris", canary())
    candidate |= until_answered_by("candidate")
    cluster.patch("configmaps", MAP, {"data": {
        "iris": "{not json", "ocr": '{"team": "team-nlp", "champion_version": "1", "rollout": {"mode": "off"}}'}}, HUB)
    champion |= until_answered_by("champion")
    assert answers("ocr")[0] == "ocr" and admin(directory).traffic() == {}

    # A deleted map: every endpoint passes through.
    maps.set("team-vision", "iris", canary())
    candidate |= until_answered_by("candidate")
    cluster.delete("configmaps", MAP, HUB)
    champion |= until_answered_by("champion")
    assert admin(directory).traffic() == {}

    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "the evidence written" in output, output
    assert f"traffic map {MAP} in namespace {HUB} read: 0 endpoint(s) in rollout, there is no such ConfigMap" in output
    assert "iris: canary 100% → candidate version 4 (champion version 3, evidence of 100%)" in output
    assert "iris: mode off, all to the champion (champion version 3, evidence of 100%)" in output
    assert "iris: out of rollout, passes through to its champion" in output
    assert f"traffic map {MAP} deleted: every endpoint passes through to its champion" in output
    assert f"traffic map {MAP}: iris: " in output and f"traffic map {MAP}: ocr: the traffic of team 'team-nlp', " \
        "not 'team-vision''s; left out: the endpoint passes through to its champion" in output
    assert token not in output and "Traceback" not in output and "not followed" not in output, output

    now = datetime.now(UTC)
    df = read_window(s3_admin, BUCKET, evidence_prefix("platform", "team-vision"), "iris", now - timedelta(minutes=5),
                     now + timedelta(minutes=5))
    by_id = {row.request_id: row for row in df.itertuples()}
    # What the map had in rollout is recorded with its versions; what passed through (no map entry) is not.
    assert {(by_id[rid].side, by_id[rid].model_version, by_id[rid].mode) for rid in candidate} == {
        ("candidate", "4", "canary")}
    assert {(by_id[rid].side, by_id[rid].model_version, by_id[rid].mode) for rid in off} == {
        ("champion", "3", "single")}  # mode off: the champion's, as the gateway records it
    assert not champion & set(by_id)


def test_an_api_server_failing_at_the_start_is_tried_again_while_the_gateway_serves(pod, maps, cluster):
    maps.set("team-vision", "iris", canary())
    cluster.fail("list", "configmaps", 503, message="etcd is down", times=2)
    proc, directory, _, _ = pod()
    assert answers()[0] == "champion"  # serving already, passing through
    until_answered_by("candidate")  # after 1 s and 2 s of backoff
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert output.count(f"traffic map {MAP} in namespace {HUB} not followed (503 etcd is down); the gateway keeps "
                        "the map it has and tries again") == 2, output
    assert f"traffic map {MAP} in namespace {HUB} read: 1 endpoint(s) in rollout" in output


def test_while_the_api_server_is_out_of_reach_the_gateway_keeps_the_map_it_has(pod):
    with FakeKube() as fake:
        load_rendered_cluster(fake)
        traffic_maps(fake).set("team-vision", "iris", canary())
        proc, directory, _, _ = pod(fake)
        until_answered_by("candidate")
    time.sleep(2)  # the API server is gone: the watch ends, and each new try fails
    until_answered_by("candidate")
    assert admin(directory).traffic() == {"iris": canary().entry()}
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert f"traffic map {MAP} in namespace {HUB} not followed (" in output
    assert "iris: out of rollout" not in output


def test_the_map_of_another_team_is_not_applied(pod, maps, cluster):
    """The pod follows its own team's map only (the account may read every team's: one account for all gateways)."""
    TrafficMaps(maps.api.api_client, HUB).set("team-nlp", "iris", Traffic(
        team="team-nlp", champion_version="3", candidate_version="4", rollout=rollout(mode="canary", share=1.0)))
    proc, directory, _, _ = pod()
    time.sleep(1)
    assert answers()[0] == "champion" and admin(directory).traffic() == {}
    cluster.delete("configmaps", gateway_traffic("team-nlp"), HUB)


def test_the_controller_rolls_a_breaching_canary_back_through_the_teams_gateway(pod, maps, cluster, tmp_path):
    """Issue 12's automatic rollback on the Kubernetes path, end to end: the platform service starts a canary (the
    team's RayService patched, its map written with the hub's account), the gateway pod routes it and records the
    evidence, the controller reads that evidence with the platform's S3 identity, finds the candidate 0.3 s slow on
    rare inputs, and sets mode off in the map; the gateway sends everything to the champion again."""
    proc, directory, s3_admin, _ = pod()
    catalog = load_catalog(tmp_path / "platform.yaml", environ={})  # the pod's: S3 at SeaweedFS
    admin_client = kubernetes.config.new_client_from_config(config_file=str(cluster.write_kubeconfig(tmp_path / "a")))
    alice = KubernetesServing(KubernetesServingConfig.for_catalog(catalog, namespace="team-vision", team="team-vision",
                                                                  user="alice"), api_client=admin_client)
    webhooks = cluster.list("validatingwebhookconfigurations")  # the platform service's budgets: not run here
    for webhook in webhooks:
        cluster.delete("validatingwebhookconfigurations", webhook["metadata"]["name"])
    try:
        alice.deploy(serving_request(name="iris", model_uri="models:/iris/3"), model_version="3", env={},
                     owner={"user": "alice", "team": "team-vision"})
        rolled_back_through_the_gateway(proc, cluster, catalog, s3_admin, tmp_path)
    finally:
        for webhook in webhooks:
            cluster.seed({k: v for k, v in webhook.items() if k != "status"} | {"metadata": {
                k: v for k, v in webhook["metadata"].items() if k in ("name", "labels", "annotations")}})


def rolled_back_through_the_gateway(proc, cluster, catalog, s3_admin, tmp_path):
    backend = KubernetesRollouts(lambda: catalog, api_client=traffic_maps(cluster).api.api_client)  # the hub's
    rollouts = Rollouts(catalog=lambda: catalog, audit=AuditLog(connect(f"sqlite:///{tmp_path / 'audit.db'}")),
                        promotions=Registry(), backend=backend, s3=lambda: s3_admin)
    rollouts.start(caller("bob", "team-vision"), "team-vision", "iris", version=4, mode="canary", share=0.5)
    deadline = time.monotonic() + SECONDS
    while answers()[0] != "candidate":  # the gateway applied the map and found the candidate healthy
        assert time.monotonic() < deadline, "the canary got no request"

    deadline, rolled_back = time.monotonic() + 60, []
    while not rolled_back:
        assert time.monotonic() < deadline, "the controller did not roll the canary back"
        for _ in range(20):  # rare inputs: the candidate (half of them) answers 0.3 s late
            requests.post(f"http://127.0.0.1:{GATEWAY}/iris/predict", json={"inputs": [["rare"]]}, timeout=10)
        rolled_back = rollouts.check()  # the controller's pass (every check_every_seconds in the service)
    [done] = rolled_back
    assert done["automatic"] and "candidate p99" in done["reason"], done
    entry = json.loads(cluster.get("configmaps", MAP, HUB)["data"]["iris"])
    assert (entry["rollout"]["mode"], entry["rollout"]["reason"]) == ("off", done["reason"])
    until_answered_by("champion")
    assert {answers()[0] for _ in range(30)} == {"champion"}
    [record] = rollouts.audit.query(action="rollback")
    assert (record["actor"], record["details"]["automatic"]) == ("platform", True)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert "iris: mode off, all to the champion" in output, output
