"""The rollout gateway (serving/gateway.py, gateway.lua, mlplatform_service/evidence.py) with the real HAProxy Ray Serve ships,
a real S3 server (SeaweedFS) and two HTTP servers standing in for the champion's and the candidate's Serve
applications (the gateway sees only HTTP): shadow answers callers from the champion only and records both sides
under the platform's evidence prefix with the gateway's own ids, sides, versions and times; a candidate that is
slow on a rare input is caught by the live gates from that evidence; canary splits by share and pins keys;
a candidate that stops answering gets no traffic; reloads under load drop no request; a bad spec is refused
naming the field and changes nothing, and no text of a spec can inject HAProxy configuration."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlplatform.serving.errors import InvalidServingRequest
from mlplatform.serving.gateway import (LOG_REQUEST_BYTES, MAX_BODY, Gateway, GatewayError, GatewaySpec, Traffic,
                                        check_endpoint, render)
from mlplatform.serving.inference_log import InferenceLog, S3Writer, read_window
from mlplatform.serving.rollout import rollout

from hub_config.local import seaweedfs
from mlplatform_core.catalog import LiveGates
from mlplatform_service import live_gates
from mlplatform_service.evidence import EvidenceShipper, evidence_prefix

from ..support.dns_server import dns_server
from ..support.seaweedfs_server import seaweedfs_server

BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 5200  # … + 5299
BUCKET, REGION = "platform", "us-east-1"
PREFIX = evidence_prefix("platform", "team-vision")
SLOW_S = 0.3


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog (5 by default: mirrors' new connections would wait 1 s)
    daemon_threads = True


@dataclasses.dataclass
class App:
    """One application's behaviour: its prediction, slow on bodies with "rare", failing (500), or gone (404);
    `trailing`: its body SLOW_S after its headers."""

    name: str
    slow: bool = False
    trailing: bool = False
    failing: bool = False
    gone: bool = False
    finished: dict = dataclasses.field(default_factory=dict)  # the gateway's request id → when it answered


class Serve:
    """An HTTP server answering like Ray Serve's proxy: the champion's application at /iris, the candidate's at
    /iris--candidate (/predict, /health); every answer with a forged X-Rollout-Side."""

    def __init__(self, port: int):
        self.apps = {"/iris": App("champion"), "/iris--candidate": App("candidate", slow=True), "/ocr": App("ocr")}
        apps = self.apps

        class Handler(BaseHTTPRequestHandler):
            def _app(self):
                prefix, _, rest = self.path.rpartition("/")
                app = apps.get(prefix)
                return (app, rest) if app and not app.gone else (None, rest)

            def do_GET(self):
                app, rest = self._app()
                self._send(200 if app and rest == "health" else 404, {"status": "ok"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                app, rest = self._app()
                if app is None or rest != "predict":
                    return self._send(404, {"message": f"no route {self.path}"})
                if app.slow and b"rare" in body:
                    time.sleep(SLOW_S)
                if app.failing:
                    self._send(500, {"message": f"{app.name} failed"})
                else:
                    self._send(200, {"predictions": [app.name]}, trailing=app.trailing)
                app.finished[self.headers.get("X-Request-Id", "")] = time.monotonic()

            def _send(self, status, doc, trailing=False):
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Rollout-Side", "forged-by-the-model")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if trailing:
                    self.wfile.flush()
                    time.sleep(SLOW_S)
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def candidate(self) -> App:
        return self.apps["/iris--candidate"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"), BASE, REGION, BUCKET) as (url, keys):
        yield seaweedfs.admin_client(url, REGION, keys)


@pytest.fixture
def serve():
    server = Serve(BASE + 51)
    yield server
    server.close()


@pytest.fixture
def evidence(s3, tmp_path):
    """The shipper on the gateway's log socket, writing the inference log under the platform's evidence prefix."""
    def open_log(team: str) -> InferenceLog:
        return InferenceLog(S3Writer(s3, BUCKET, evidence_prefix("platform", team)), batch_rows=50, flush_seconds=0.5,
                            seed="iris")

    shipper = EvidenceShipper(tmp_path / "evidence.sock", open_log)
    shipper.start()
    yield shipper
    shipper.close(timeout=10)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="platform/"):  # the next test's
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])


def spec_for(shipper, **changes) -> GatewaySpec:
    return dataclasses.replace(GatewaySpec(listen=("127.0.0.1", BASE + 50), upstream=("127.0.0.1", BASE + 51),
                                           log_socket=shipper.socket_path if shipper else None), **changes)


def traffic(**settings) -> Traffic:
    return Traffic(team="team-vision", champion_version="3", candidate_version="4", rollout=rollout(**settings))


def single(version: str = "3", team: str = "team-vision") -> Traffic:
    return Traffic(team=team, champion_version=version)


@pytest.fixture
def gateway(tmp_path):
    started = []

    def start(spec: GatewaySpec, first: Traffic | None = None) -> Gateway:
        """A gateway of `spec`, and iris in rollout by `first`."""
        g = Gateway(tmp_path / f"gateway{len(started)}", spec)
        started.append(g)
        g.start()
        if first is not None:
            g.set("iris", first)
            if first.rollout.mode in ("shadow", "canary"):
                healthy(g)
        return g

    yield start
    for g in started:
        g.stop()


def healthy(g: Gateway) -> None:
    """Until the gateway found the candidate healthy: it sends it nothing before (a request asks for the checks)."""
    requests.get(url("/iris/health"), timeout=10)
    deadline = time.monotonic() + 5
    while not g.candidates().get("iris"):
        assert time.monotonic() < deadline, g.candidates()
        time.sleep(0.05)


def url(path: str = "/iris/predict") -> str:
    return f"http://127.0.0.1:{BASE + 50}{path}"


def evidence_in_s3(s3, shipper, expected: int, *, complete=None) -> pd.DataFrame:
    """The window's records once `expected` are in S3, and `complete(df)` if given (the shipper's log flushes every
    0.5 s)."""
    deadline, found = time.monotonic() + 20, 0
    while time.monotonic() < deadline:
        now = datetime.now(UTC)
        df = read_window(s3, BUCKET, PREFIX, "iris", now - timedelta(minutes=5), now + timedelta(minutes=5))
        if (found := len(df)) >= expected and (complete is None or complete(df)):
            return df
        time.sleep(0.2)
    raise AssertionError(f"{found} of {expected} records in S3 after 20 s; the shipper: {shipper.stats()}")


def test_shadow_answers_from_the_champion_and_the_evidence_catches_a_slow_candidate(s3, serve, evidence, gateway):
    gateway(spec_for(evidence), traffic(mode="shadow"))
    sent, answered_at = {}, {}
    for i in range(60):
        body = json.dumps({"inputs": [[i, i % 3]], "note": "rare" if i % 5 == 0 else ""})
        r = requests.post(url(), data=body, headers={"Content-Type": "application/json", "X-Request-Id": "forged"},
                          timeout=10)
        answered_at[r.headers["X-Request-Id"]] = time.monotonic()
        assert r.status_code == 200 and r.json() == {"predictions": ["champion"]}
        assert r.headers["X-Rollout-Side"] == "champion"  # the gateway's word, not the model's header
        assert r.headers["X-Request-Id"] != "forged"  # the evidence's id is the gateway's
        sent[r.headers["X-Request-Id"]] = body
    df = evidence_in_s3(s3, evidence, 120)
    assert set(df["request_id"]) == set(sent)
    for rid, rows in df.groupby("request_id"):
        by_side = {row.side: row for row in rows.itertuples()}
        assert set(by_side) == {"champion", "candidate"}, rid
        assert (by_side["champion"].model_version, by_side["candidate"].model_version) == ("3", "4")
        assert {row.mode for row in rows.itertuples()} == {"shadow"}
        assert all(row.inputs == sent[rid] for row in rows.itertuples())
        assert json.loads(by_side["candidate"].outputs) == ["candidate"]
        assert json.loads(by_side["champion"].outputs) == ["champion"]
        if "rare" in sent[rid]:
            assert by_side["candidate"].latency_ms >= SLOW_S * 1000
            # The caller had the champion's answer before the candidate answered the mirror.
            assert answered_at[rid] < serve.candidate.finished[rid]
    assert evidence.counts["unreadable"] == evidence.counts["not_records"] == 0  # no HTTP client or check lines
    reason = live_gates.breach(df, LiveGates(min_requests_for_rollback=20))
    assert reason and "candidate p99" in reason and "the champion's" in reason, reason


def test_in_shadow_both_sides_are_timed_alike_and_a_mirror_keeps_the_key(s3, serve, evidence, gateway):
    """Each side's latency is HAProxy's, from the request in to its answer's headers: a mirror's is not the time around
    gateway.lua's call (a new connection each, the task's scheduling, the body's arrival), which put a candidate as
    fast as its champion above it at p99. Here both sides send their headers at once and their body SLOW_S later."""
    serve.apps["/iris"].trailing = serve.candidate.trailing = True
    gateway(spec_for(evidence), traffic(mode="shadow"))
    for i in range(20):
        r = requests.post(url(), json={"inputs": [[i, 0]]}, headers={"X-Rollout-Key": f"user-{i % 4}"}, timeout=10)
        assert r.json() == {"predictions": ["champion"]}
    df = evidence_in_s3(s3, evidence, 40)
    assert df["side"].value_counts().to_dict() == {"champion": 20, "candidate": 20}
    assert (df["latency_ms"] < SLOW_S * 1000 / 2).all(), df[["side", "latency_ms"]]
    keys = df.pivot(index="request_id", columns="side", values="key")
    assert (keys["candidate"] == keys["champion"]).all() and set(keys["candidate"]) == {f"user-{i}" for i in range(4)}


def test_on_a_cluster_each_endpoint_is_a_service_of_its_own_found_by_dns(s3, serve, evidence, gateway):
    """Upstream `{endpoint}.serve.test` (on a cluster `{endpoint}-serve-svc.<namespace>.svc...`, KubeRay's Service of
    each endpoint): the endpoint's Serve is found per request by DNS, for the champion, the mirror and the
    candidate's health check; a name DNS does not know is a 404, until its Service exists."""
    with dns_server(BASE + 52, {"iris.serve.test": "127.0.0.1"}) as records:
        spec = spec_for(evidence, upstream=("{endpoint}.serve.test", BASE + 51),
                        nameservers=(("127.0.0.1", BASE + 52),))
        g = gateway(spec, traffic(mode="shadow"))  # the candidate found healthy through DNS
        assert g.candidates() == {"iris": True}
        r = requests.post(url(), json={"inputs": [[1, 2]]}, timeout=10)
        assert (r.status_code, r.json(), r.headers["X-Rollout-Side"]) == (
            200, {"predictions": ["champion"]}, "champion")
        df = evidence_in_s3(s3, evidence, 2)  # the mirror reached the candidate through DNS too
        assert {row.side: json.loads(row.outputs) for row in df.itertuples()} == {
            "champion": ["champion"], "candidate": ["candidate"]}
        gone = requests.post(url("/ocr/predict"), json={}, timeout=10)  # Serve has /ocr; DNS has no ocr yet
        assert (gone.status_code, gone.json()) == (404, {"message": "no such endpoint"})
        # Only a DNS label is looked up: a name with dots (another record under the suffix) is not even asked.
        records["x.iris.serve.test"] = "127.0.0.1"
        dotted = requests.post(url("/x.iris/predict"), json={}, timeout=10)
        assert (dotted.status_code, dotted.json()) == (404, {"message": "no such endpoint"})
        records["ocr.serve.test"] = "127.0.0.1"
        deadline = time.monotonic() + 10  # a name not found is asked again after 2 s
        while (r := requests.post(url("/ocr/predict"), json={}, timeout=10)).status_code == 404:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.json() == {"predictions": ["ocr"]} and "X-Rollout-Side" not in r.headers  # not in rollout


def test_canary_splits_by_share_pins_keys_and_spares_callers_a_gone_candidate(s3, serve, evidence, gateway):
    g = gateway(spec_for(evidence), traffic(mode="canary", share=0.3))
    sides = [requests.post(url(), json={"inputs": [[1, 2]]}, timeout=10).headers["X-Rollout-Side"] for _ in range(300)]
    assert 0.2 < sides.count("candidate") / len(sides) < 0.4, sides.count("candidate")

    def side_of(key: str) -> str:
        return requests.post(url(), json={"inputs": [[1, 2]]}, headers={"X-Rollout-Key": key}, timeout=10
                             ).json()["predictions"][0]

    keys = [f"user-{i}" for i in range(40)]
    first = {k: side_of(k) for k in keys}
    assert {k: side_of(k) for k in keys} == first  # a key stays on its side
    assert "candidate" in first.values() and "champion" in first.values()
    g.set("iris", traffic(mode="canary", share=0.7))
    raised = {k: side_of(k) for k in keys}
    assert all(raised[k] == "candidate" for k in keys if first[k] == "candidate")  # raising only moves keys over
    assert list(raised.values()).count("candidate") > list(first.values()).count("candidate")

    df = evidence_in_s3(s3, evidence, 300 + 3 * 40)
    assert set(df["mode"]) == {"canary"} and set(df["model_version"]) == {"3", "4"}
    keyed = df[df["key"].notna()]
    assert set(keyed["key"]) == set(keys) and len(keyed) == 3 * 40
    assert df[df["key"].isna()]["side"].value_counts()["candidate"] == sides.count("candidate")

    # The candidate's application goes: once its health check fails (1 s apart, 2 failures), callers get the
    # champion, and a new one gets traffic once it answers. Canary requests before the first check get the champion.
    serve.candidate.gone = True
    time.sleep(3)
    answers = [requests.post(url(), json={"inputs": [[1, 2]]}, timeout=10) for _ in range(50)]
    assert {(r.status_code, r.headers["X-Rollout-Side"]) for r in answers} == {(200, "champion")}
    serve.candidate.gone = False
    time.sleep(2)
    assert "candidate" in {requests.post(url(), json={}, timeout=10).headers["X-Rollout-Side"] for _ in range(30)}


def test_evidence_of_a_sample_keeps_both_sides_of_each_request(s3, serve, evidence, gateway):
    g = gateway(spec_for(evidence), dataclasses.replace(traffic(mode="shadow"), sample_rate=0.5))
    ids = [requests.post(url(), json={"i": i}, timeout=10).headers["X-Request-Id"] for i in range(100)]
    time.sleep(1)  # the mirrors' lines
    df = evidence_in_s3(s3, evidence, 2)
    kept = set(df["request_id"])
    assert 25 <= len(kept) <= 75 and kept <= set(ids)
    assert all(sorted(rows["side"]) == ["candidate", "champion"] for _, rows in df.groupby("request_id"))
    g.set("iris", dataclasses.replace(traffic(mode="shadow"), sample_rate=0))
    more = [requests.post(url(), json={}, timeout=10).headers["X-Request-Id"] for _ in range(20)]
    time.sleep(1.5)
    assert not set(evidence_in_s3(s3, evidence, 2)["request_id"]) & set(more)
    assert serve.candidate.finished.keys() >= set(more)  # still mirrored: the evidence is off, not the shadow


def test_evidence_waits_in_the_ring_while_the_shipper_restarts_and_none_is_lost(s3, serve, evidence, gateway):
    """While the platform service restarts, or the local head's runtime directory is made anew (keep_listening),
    lines wait in HAProxy's ring, which connects again. The ring has no acknowledgement: the first line written
    to a connection the shipper has just closed can be lost (seen: one), never the ones after."""
    g = gateway(spec_for(evidence), single())
    before = [requests.post(url(), json={"i": i}, timeout=10).headers["X-Request-Id"] for i in range(10)]
    evidence_in_s3(s3, evidence, 10)
    evidence.close(timeout=10)  # the service stops: its socket goes
    during = [requests.post(url(), json={"i": i}, timeout=10).headers["X-Request-Id"] for i in range(10)]
    assert not evidence.socket_path.exists()
    later = EvidenceShipper(evidence.socket_path, evidence.open_log)
    later.start()
    try:
        df = evidence_in_s3(s3, later, 19)
        lost = set(before + during) - set(df["request_id"])
        assert lost <= {during[0]} and later.counts["unreadable"] == 0, lost
        evidence.socket_path.unlink()  # the head's runtime directory removed and made again
        assert later.keep_listening() and not later.keep_listening()
        g.stop()  # a new gateway (the head started again) connects to the new socket
        g.start()
        after = requests.post(url(), json={}, timeout=10).headers["X-Request-Id"]
        assert after in set(evidence_in_s3(s3, later, 20 - len(lost) + 1)["request_id"])
    finally:
        later.close(timeout=10)


def test_errors_are_evidence_with_their_messages(s3, serve, evidence, gateway):
    gateway(spec_for(evidence), traffic(mode="shadow"))
    serve.candidate.failing = True
    for _ in range(25):
        assert requests.post(url(), data=b"not json at all", timeout=10).status_code == 200
    df = evidence_in_s3(s3, evidence, 50)
    failed = df[df["side"] == "candidate"]
    assert set(failed["status"]) == {500} and set(failed["error"]) == {"candidate failed"}
    assert set(df["inputs"]) == {"not json at all"} and df[df["side"] == "champion"]["error"].isna().all()
    assert "candidate error rate 100% (25 of 25" in live_gates.breach(df, LiveGates(min_requests_for_rollback=20))


def test_long_bodies_are_answered_whole_and_their_evidence_says_unknown(s3, serve, evidence, gateway):
    """A body longer than the gateway's buffer reaches the champion whole and is not mirrored (the candidate would
    get it cut); one longer than the evidence keeps is mirrored; neither is logged as a prefix: inputs unknown."""
    gateway(spec_for(evidence), traffic(mode="shadow"))
    bodies = {size: json.dumps({"inputs": [[i, i] for i in range(size // 10)]}) for size in (100, 50_000, 300_000)}
    assert len(bodies[100]) < LOG_REQUEST_BYTES < len(bodies[50_000]) < MAX_BODY < len(bodies[300_000])
    ids = {}
    for size, body in bodies.items():
        r = requests.post(url(), data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 200 and r.json() == {"predictions": ["champion"]}
        ids[size] = r.headers["X-Request-Id"]
    df = evidence_in_s3(s3, evidence, 5)
    rows = {size: df[df["request_id"] == rid] for size, rid in ids.items()}
    assert sorted(rows[100]["side"]) == sorted(rows[50_000]["side"]) == ["candidate", "champion"]
    assert list(rows[300_000]["side"]) == ["champion"] and evidence.counts["mirrors_skipped"] == 1
    assert set(rows[100]["inputs"]) == {bodies[100]}
    assert rows[50_000]["inputs"].isna().all() and rows[300_000]["inputs"].isna().all()
    assert serve.candidate.finished.keys() == {ids[100], ids[50_000]} and evidence.counts["unreadable"] == 0


def test_changes_under_load_drop_no_request_and_lose_no_evidence(s3, serve, evidence, gateway):
    g = gateway(spec_for(evidence), single())
    failures, answered, stop = [], [], threading.Event()

    def client():
        with requests.Session() as http:
            while not stop.is_set():
                try:
                    r = http.post(url(), json={"inputs": [[1, 2]]}, timeout=10)
                    answered.append(r.headers["X-Request-Id"]) if r.status_code == 200 else failures.append(r.text)
                except requests.RequestException as e:
                    failures.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for step in (traffic(mode="shadow"), traffic(mode="canary", share=0.1), traffic(mode="canary", share=0.5),
                     traffic(mode="off"), traffic(mode="shadow", mirror_rate=0.5), traffic(mode="canary", share=1.0),
                     single("4")):
            time.sleep(0.5)
            g.set("iris", step)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(answered) > 100 and failures == []

    def callers(df):  # the answers callers got (the mirrors aside)
        return df[(df["side"] == "champion") | (df["mode"] == "canary")]

    df = evidence_in_s3(s3, evidence, len(answered), complete=lambda df: len(callers(df)) >= len(answered))
    assert sorted(callers(df)["request_id"]) == sorted(answered)
    assert set(df["mode"]) == {"single", "shadow", "canary"} and g.traffic_map.read_text() == "iris team-vision|off|0|0|4|-|10000\n"


def test_each_teams_evidence_is_under_its_own_prefix(s3, serve, evidence, gateway):
    g = gateway(spec_for(evidence), single())
    g.set("ocr", single("7", team="team-nlp"))
    ours = requests.post(url(), json={"inputs": [[1, 2]]}, timeout=10).headers["X-Request-Id"]
    theirs = requests.post(url("/ocr/predict"), json={"inputs": [[3, 4]]}, timeout=10).headers["X-Request-Id"]
    df = evidence_in_s3(s3, evidence, 1)
    assert list(df["request_id"]) == [ours] and list(df["model_version"]) == ["3"]
    now = datetime.now(UTC)
    nlp = read_window(s3, BUCKET, evidence_prefix("platform", "team-nlp"), "ocr", now - timedelta(minutes=5),
                      now + timedelta(minutes=5))
    assert list(nlp["request_id"]) == [theirs] and list(nlp["model_version"]) == ["7"]
    assert set(evidence.stats()["logs"]) == {"team-vision", "team-nlp"}


def test_an_endpoint_out_of_rollout_passes_through_unrecorded_and_candidates_are_the_gateways_alone(s3, serve,
                                                                                                  evidence, gateway):
    g = gateway(spec_for(evidence))
    r = requests.post(url(), json={"inputs": [[1, 2]]}, timeout=10)
    assert r.json() == {"predictions": ["champion"]} and "X-Rollout-Side" not in r.headers
    assert r.headers["X-Request-Id"]
    assert requests.get(url("/iris/health"), timeout=10).status_code == 200  # every route, every method
    # The candidate's application answers as the gateway routes or mirrors to it, never to a caller.
    assert requests.post(url("/iris--candidate/predict"), json={}, timeout=10).status_code == 404
    g.set("iris", traffic(mode="canary", share=1.0))
    assert requests.post(url(), json={}, timeout=10).headers["X-Rollout-Side"] == "champion"  # not checked yet
    time.sleep(0.3)  # the candidate's first health check, asked for by that request
    assert requests.post(url(), json={}, timeout=10).headers["X-Rollout-Side"] == "candidate"
    g.clear("iris")
    g.clear("iris")  # nothing to do
    r = requests.post(url(), json={}, timeout=10)
    assert r.json() == {"predictions": ["champion"]} and "X-Rollout-Side" not in r.headers
    assert g.traffic() == {} and g.command(f"show map {g.traffic_map}").strip() == ""
    df = evidence_in_s3(s3, evidence, 2)
    assert sorted(df["side"]) == ["candidate", "champion"] and evidence.counts["unreadable"] == 0


def test_a_bad_change_is_refused_naming_the_field_and_changes_nothing(serve, evidence, gateway):
    g = gateway(spec_for(evidence), traffic(mode="canary", share=0.5))
    before = g.traffic_map.read_text()
    for endpoint, bad, field in (("iris", single("3 4"), "champion_version"),
                                 ("iris", dataclasses.replace(single(), candidate_version="x|y"), "candidate_version"),
                                 ("iris", dataclasses.replace(single(), rollout=rollout(mode="shadow")),
                                  "candidate_version"),
                                 ("iris", single(team="team vision"), "team"),
                                 ("iris", dataclasses.replace(single(), sample_rate=1.5), "sample_rate"),
                                 ("iris x", single(), "endpoint"), ("iris\nocr", single(), "endpoint"),
                                 # A trailing newline would end an admin socket command and start another.
                                 ("iris\n", single(), "endpoint"), ("iris", single("3\n"), "champion_version"),
                                 ("iris", single(team="team-vision\n"), "team")):
        with pytest.raises(InvalidServingRequest) as refused:
            g.set(endpoint, bad)
        assert [f for f, _ in refused.value.problems] == [field], refused.value.problems
    assert g.traffic_map.read_text() == before
    assert "canary|5000" in g.command(f"show map {g.traffic_map}")
    with pytest.raises(InvalidServingRequest) as refused:  # nor a configuration line
        render(spec_for(None, upstream=("127.0.0.1\nbackend x", 80)), admin_socket=g.admin_socket,
               traffic_map=g.traffic_map, mirror_socket=g.mirror_socket)
    assert [f for f, _ in refused.value.problems] == ["upstream.host"]
    sides = {requests.post(url(), json={}, timeout=10).headers["X-Rollout-Side"] for _ in range(40)}
    assert sides == {"champion", "candidate"}  # still the canary it was
    g.stop()
    with pytest.raises(GatewayError, match="does not answer on .*admin.sock"):
        g.set("iris", traffic(mode="shadow"))
    assert g.traffic_map.read_text() == before


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(team=TEXT | st.sampled_from(["team-vision", "team-vision\n"]), endpoint=TEXT | st.sampled_from(["iris", "iris\n"]),
       host=TEXT | st.sampled_from(["127.0.0.1", "127.0.0.1\n", "{endpoint}-serve-svc.team-vision.svc.cluster.local",
                                    "{endpoint}", "{endpoint}.x\n", "{endpoint}.x y"]), port=st.integers(-5, 70000),
       champion=TEXT | st.sampled_from(["3", "3\n"]), candidate=st.none() | TEXT)
def test_no_text_gets_into_the_configuration_unchecked(tmp_path_factory, team, endpoint, host, port, champion,
                                                        candidate):
    """Every text of a spec or a traffic change is refused (naming its field) or HAProxy accepts what it makes:
    nothing of a name, host or version can add a directive or a map entry."""
    spec = GatewaySpec(listen=("127.0.0.1", BASE + 70), upstream=(host, port))
    directory = tmp_path_factory.mktemp("fuzz")
    try:
        entry = Traffic(team=team, champion_version=champion, candidate_version=candidate).entry()
        key = check_endpoint(endpoint)
    except InvalidServingRequest as e:
        assert {f for f, _ in e.problems} <= {"team", "champion_version", "candidate_version", "endpoint"}
    else:
        assert entry.count("|") == 6 and " " not in entry + key and "\n" not in entry + key
    paths = {"admin_socket": directory / "admin.sock", "traffic_map": directory / "traffic.map",
             "mirror_socket": directory / "mirror.sock"}
    try:
        text = render(spec, **paths)
    except InvalidServingRequest as e:
        assert e.problems and {f for f, _ in e.problems} <= {"upstream.host", "upstream.port"}
        return
    baseline = render(dataclasses.replace(spec, upstream=("{endpoint}.x" if spec.per_endpoint else "127.0.0.1", 80)),
                      **paths)
    assert [line.split()[0] for line in text.splitlines()] == [line.split()[0] for line in baseline.splitlines()]
    Gateway(directory, spec).check()  # and HAProxy's own check (-c) passes


def test_the_haproxy_binary_is_the_one_named_and_a_missing_one_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_HAPROXY", str(tmp_path / "no-such-haproxy"))
    g = Gateway(tmp_path / "gw", spec_for(None))
    assert g.binary == str(tmp_path / "no-such-haproxy")
    with pytest.raises(GatewayError, match="no-such-haproxy.*cannot be run: No such file or directory"):
        g.start()
    assert g.process is None


def test_a_gateway_that_cannot_listen_says_so(serve, gateway, tmp_path):
    """An address in use (here: by another gateway, whose SO_REUSEPORT would let HAProxy share it silently) or not
    this machine's is an error naming it, and nothing keeps running."""
    gateway(spec_for(None))
    for address, why in ((("127.0.0.1", BASE + 50), "Address already in use"),
                         (("203.0.113.9", BASE + 50), "Cannot assign requested address")):
        g = Gateway(tmp_path / "gw", spec_for(None, listen=address))
        with pytest.raises(GatewayError, match=f"cannot listen on {address[0]}:{address[1]}: {why}"):
            g.start(timeout=5)
        assert g.process is None
