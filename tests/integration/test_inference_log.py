"""The inference log against a real S3 server (SeaweedFS, started for this module): batches as Parquet
files in hourly partitions read back exactly, window reads that list only their partitions, sampling
that keeps both sides of a request together, a stalled or stopped S3 that never slows `record` (and a
bound on what waits), recovery without loss, retention, and close() writing what is left."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlplatform.serving.inference_log import (
    SIDES,
    InferenceLog,
    InferenceRecord,
    S3Writer,
    input_frame,
    prune,
    read_window,
    schema,
)

from hub_config.local import seaweedfs

from ..support.seaweedfs_server import seaweedfs_server
from ..support.tcp_proxy import TcpProxy

BUCKET, PREFIX, REGION = "platform", "teams/team-vision/", "us-east-1"
# A block of its own: clear of the session platform's ports (base … base + 800), the other S3 servers
# (base + 2600 …, base + 3400 …) and the Ray heads; +800 … +899 is free in sessions whose base is 1000 apart.
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 3800
KEY = re.compile(r"^teams/team-vision/inference-log/(?P<endpoint>[^/]+)/date=(?P<date>\d{4}-\d\d-\d\d)/"
                 r"hour=(?P<hour>\d\d)/\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{32}\.parquet$")
HOUR = datetime(2026, 3, 10, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server of its own (admin identity only), with the catalog's bucket: (url, keys)."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"), BASE, REGION, BUCKET) as server:
        yield server


@pytest.fixture
def s3(s3_server):
    url, server_keys = s3_server
    client = seaweedfs.admin_client(url, REGION, server_keys)
    yield client
    for key in keys(client):  # the bucket outlives the test
        client.delete_object(Bucket=BUCKET, Key=key)


def keys(client, prefix: str = PREFIX) -> list[str]:
    out, params = [], {"Bucket": BUCKET, "Prefix": prefix}
    while True:
        page = client.list_objects_v2(**params)
        out += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return sorted(out)
        params["ContinuationToken"] = page["NextContinuationToken"]


def record(i: int, t: datetime, **kwargs) -> InferenceRecord:
    fields = {"request_id": f"req-{i:05d}", "endpoint": "iris", "side": "champion", "mode": "single",
              "model_version": "3", "latency_ms": 1.25 + i / 8, "status": 200, "time": t,
              "inputs": json.dumps([{"x": float(i), "y": i % 7}]), "outputs": json.dumps([i % 3])}
    return InferenceRecord(**{**fields, **kwargs})


def wait_until(condition, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def as_plain(df: pd.DataFrame) -> list[dict]:
    """Rows with missing values as None (pandas' string columns hold NaN)."""
    return [{k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in row.items()}
            for row in df.to_dict("records")]


class Gate:
    """Wraps an S3 client: put_object waits while the gate is closed (a stalled S3)."""

    def __init__(self, client):
        self.client, self.open, self.entered = client, threading.Event(), threading.Event()

    def put_object(self, **kwargs):
        self.entered.set()
        if not self.open.wait(30):
            raise TimeoutError("the gate stayed closed")
        return self.client.put_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


class Listing:
    """Wraps an S3 client: remembers the prefixes listed and the objects read."""

    def __init__(self, client):
        self.client, self.listed, self.read = client, [], []

    def list_objects_v2(self, **kwargs):
        self.listed.append(kwargs["Prefix"])
        return self.client.list_objects_v2(**kwargs)

    def get_object(self, **kwargs):
        self.read.append(kwargs["Key"])
        return self.client.get_object(**kwargs)


# --- the tests ---------------------------------------------------------------------------------------

def test_batches_are_parquet_files_in_hourly_partitions_and_read_back_exactly(s3):
    log = InferenceLog(S3Writer(s3, BUCKET, PREFIX), batch_rows=50, flush_seconds=60)
    start = HOUR + timedelta(minutes=59)  # 130 records a second apart: 60 in one hour, 70 in the next
    records = []
    for i in range(130):
        kwargs = {}
        if i % 10 == 3:
            kwargs = {"status": 500, "error": "the model failed: RuntimeError: boom", "outputs": None}
        if i % 4 == 1:
            kwargs.update(side="candidate", mode="shadow", model_version="4", key=f"user-{i % 5}")
        records.append(record(i, start + timedelta(seconds=i, microseconds=i * 7), **kwargs))
    order = list(range(130))
    order[::2] = reversed(order[::2])  # recorded out of time order: the reader sorts
    for i in order:
        assert log.record(records[i])

    wait_until(lambda: log.written == 100, what="two full batches written before flush_seconds")
    assert log.stats()["buffered"] == 30
    assert log.close(timeout=10)  # close writes the 30 left long before flush_seconds
    assert log.stats() == {"recorded": 130, "skipped": 0, "written": 130, "dropped": 0, "invalid": 0,
                           "failed_batches": 0, "buffered": 0}
    assert not log.record(records[0]) and log.dropped == 1  # closed

    stored = keys(s3)
    assert len(stored) >= 3  # at least one file per batch and hour
    for key in stored:
        match = KEY.match(key)
        assert match, key
        data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert data[:4] == b"PAR1"
        table = pq.read_table(pa.BufferReader(data))
        assert table.schema == schema()
        hours = {t.strftime("%Y-%m-%d %H") for t in table["time"].to_pylist()}
        assert hours == {f"{match['date']} {match['hour']}"}  # a file holds one hour

    df = read_window(s3, BUCKET, PREFIX, "iris", HOUR, HOUR + timedelta(hours=2))
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        "request_id": "str", "endpoint": "str", "side": "str", "mode": "str", "model_version": "str",
        "time": "datetime64[us, UTC]", "latency_ms": "float64", "status": "int32", "error": "str",
        "inputs": "str", "outputs": "str", "key": "str"}
    expected = [{"request_id": r.request_id, "endpoint": r.endpoint, "side": r.side, "mode": r.mode,
                 "model_version": r.model_version, "time": pd.Timestamp(r.time), "latency_ms": r.latency_ms,
                 "status": r.status, "error": r.error, "inputs": r.inputs, "outputs": r.outputs, "key": r.key}
                for r in records]  # made in time order
    assert as_plain(df) == expected


def test_a_window_read_lists_only_its_partitions(s3):
    day = HOUR.replace(hour=0)
    times = [day + timedelta(hours=h, minutes=m) for h in (21, 22, 23, 24, 25, 26, 47, 49) for m in (10, 40)]
    with InferenceLog(S3Writer(s3, BUCKET, PREFIX), batch_rows=1000) as log:
        for i, t in enumerate(times):
            log.record(record(i, t))
        log.record(record(99, day + timedelta(hours=22, minutes=5), endpoint="other"))
        assert log.flush(timeout=10)

    listing = Listing(s3)
    since, until = day + timedelta(hours=22, minutes=30), day + timedelta(hours=25)
    df = read_window(listing, BUCKET, PREFIX, "iris", since, until)
    assert df["time"].tolist() == [t for t in times if since <= t < until]
    base = f"{PREFIX}inference-log/iris/"
    assert listing.listed == [f"{base}date=2026-03-10/hour=22/", f"{base}date=2026-03-10/hour=23/",
                              f"{base}date=2026-03-11/hour=00/"]
    assert all(k.startswith(tuple(listing.listed)) for k in listing.read)

    # A whole day is one listing; its neighbours' hours are not read.
    listing = Listing(s3)
    df = read_window(listing, BUCKET, PREFIX, "iris", day + timedelta(days=1), day + timedelta(days=2, hours=1))
    assert listing.listed == [f"{base}date=2026-03-11/", f"{base}date=2026-03-12/hour=00/"]
    assert df["time"].tolist() == [t for t in times if day + timedelta(days=1) <= t < day + timedelta(days=2, hours=1)]
    assert read_window(s3, BUCKET, PREFIX, "iris", day, day).empty  # an empty window lists nothing
    empty = read_window(s3, BUCKET, PREFIX, "nobody", day, day + timedelta(days=3))
    assert empty.empty and list(empty.columns) == schema().names


def test_sampling_keeps_a_tenth_of_the_requests_with_both_sides_together(s3):
    log = InferenceLog(S3Writer(s3, BUCKET, PREFIX), sample_rate=0.1, seed="rollout-1", batch_rows=1000)
    ids = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(4000)]
    for n, request_id in enumerate(ids):
        for side in SIDES:  # a mirrored request: the router logs both answers
            log.record(record(n, HOUR + timedelta(milliseconds=n), request_id=request_id, side=side, mode="shadow"))
    assert log.close(timeout=10)
    kept = log.recorded // 2
    assert 0.08 * len(ids) <= kept <= 0.12 * len(ids), kept
    assert log.skipped == 2 * (len(ids) - kept)

    df = read_window(s3, BUCKET, PREFIX, "iris", HOUR, HOUR + timedelta(hours=1))
    sides = df.groupby("request_id")["side"].apply(sorted)
    assert len(sides) == kept and all(s == ["candidate", "champion"] for s in sides)

    # Another replica (another process, its own hash seed) makes the same choice; another seed, another one.
    code = ("import sys, json; from mlplatform.serving.inference_log import InferenceLog\n"
            "class W:\n    def write(self, *a): pass\n"
            "log = InferenceLog(W(), sample_rate=0.1, seed='rollout-1')\n"
            "print(json.dumps([i for i in json.load(sys.stdin) if log.sampled(i)]))")
    other = subprocess.run([sys.executable, "-c", code], input=json.dumps(ids), capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert sorted(json.loads(other.stdout)) == sorted(sides.index)
    reseeded = InferenceLog(S3Writer(s3, BUCKET, PREFIX), sample_rate=0.1, seed="rollout-2")
    assert {i for i in ids if reseeded.sampled(i)} != set(sides.index)
    reseeded.close(1)


def test_a_stalled_s3_does_not_slow_record_and_memory_stays_bounded(s3):
    gate = Gate(s3)
    log = InferenceLog(S3Writer(gate, BUCKET, PREFIX), batch_rows=500, flush_seconds=0.2, max_buffered_rows=5000)
    assert log.record(record(0, HOUR))
    assert gate.entered.wait(5)  # the log's thread is inside put_object, stalled

    records = [record(i, HOUR + timedelta(milliseconds=i)) for i in range(1, 10001)]
    latencies = []
    started = time.perf_counter()
    for r in records:
        t = time.perf_counter()
        log.record(r)
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    latencies.sort()
    print(f"10,000 records with S3 stalled: {elapsed * 1000:.1f} ms; per record p50 "
          f"{latencies[5000] * 1e6:.1f} µs, p99 {latencies[9900] * 1e6:.1f} µs, max {latencies[-1] * 1e6:.0f} µs")
    assert elapsed < 0.5
    assert log.stats() == {"recorded": 5000, "skipped": 0, "written": 0, "dropped": 5001, "invalid": 0,
                           "failed_batches": 0, "buffered": 5000}

    # Full, more records keep nothing: memory does not grow with what is dropped.
    more = [record(i, HOUR) for i in range(20000, 40000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for r in more:
        log.record(r)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 64 * 1024, grown
    assert log.dropped == 25001 and log.buffered == 5000

    gate.open.set()  # S3 answers again: what was accepted is written
    assert log.flush(timeout=30)
    assert log.close(timeout=10)
    assert (log.written, log.buffered) == (5000, 0)
    df = read_window(s3, BUCKET, PREFIX, "iris", HOUR, HOUR + timedelta(hours=1))
    assert df["request_id"].tolist() == [f"req-{i:05d}" for i in range(5000)]


def test_the_buffer_is_bounded_in_bytes_too():
    gate = threading.Event()

    class Stalled:
        def write(self, endpoint, first, data):
            gate.wait(10)

    log = InferenceLog(Stalled(), max_buffered_bytes=100_000, flush_seconds=0.1)
    accepted = sum(log.record(record(i, HOUR, inputs="x" * 10_000)) for i in range(100))
    assert accepted == 9 and log.dropped == 91  # ~10 KB each (+256 bytes of overhead) within 100 KB
    gate.set()
    assert log.close(timeout=5)


def test_close_gives_up_at_its_deadline_when_s3_stays_down():
    class Down:
        calls = 0

        def write(self, endpoint, first, data):
            Down.calls += 1
            raise ConnectionError("S3 is down")

    log = InferenceLog(Down(), batch_rows=10, retry_initial_seconds=0.05, retry_max_seconds=0.1)
    for i in range(25):
        log.record(record(i, HOUR))
    started = time.monotonic()
    assert not log.close(timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert Down.calls >= 3 and log.failed_batches == Down.calls
    assert (log.written, log.dropped, log.buffered) == (0, 25, 0)


def test_an_s3_outage_then_recovery_writes_the_buffered_batches_without_loss(s3_server, s3):
    url, server_keys = s3_server
    with TcpProxy(url) as proxy:
        client = seaweedfs.admin_client(proxy.url, REGION, server_keys)
        log = InferenceLog(S3Writer(client, BUCKET, PREFIX), batch_rows=100, flush_seconds=0.2,
                           retry_initial_seconds=0.05, retry_max_seconds=0.3)
        proxy.stop()  # S3 is gone: connections refused
        started = time.perf_counter()
        assert all(log.record(record(i, HOUR + timedelta(seconds=i))) for i in range(250))
        assert time.perf_counter() - started < 0.5
        wait_until(lambda: log.failed_batches >= 3, what="retries while S3 is down")
        assert (log.written, log.buffered, log.dropped) == (0, 250, 0)

        proxy.restore()
        assert log.flush(timeout=20)
        assert log.close(timeout=5)
    assert (log.written, log.dropped) == (250, 0)
    df = read_window(s3, BUCKET, PREFIX, "iris", HOUR, HOUR + timedelta(hours=1))
    assert df["request_id"].tolist() == [f"req-{i:05d}" for i in range(250)]  # each once: no loss, no duplicate


def test_prune_deletes_only_partitions_older_than_the_retention(s3):
    now = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    cutoff = now - timedelta(days=7)  # 2026-03-03 12:30
    times = {"old": now - timedelta(days=10), "hour before the cutoff": cutoff - timedelta(minutes=31),
             "cutoff's hour": cutoff - timedelta(minutes=10), "younger": cutoff + timedelta(hours=1),
             "recent": now - timedelta(hours=1)}
    with InferenceLog(S3Writer(s3, BUCKET, PREFIX)) as log:
        for i, t in enumerate(times.values()):
            log.record(record(i, t))
        log.record(record(9, times["old"], endpoint="other"))
    assert log.written == 6
    before = keys(s3)

    assert prune(s3, BUCKET, PREFIX, "iris", older_than_days=7, now=now) == 2
    after = keys(s3)
    gone = sorted(set(before) - set(after))
    assert [KEY.match(k)["date"] + " " + KEY.match(k)["hour"] for k in gone] == ["2026-02-28 12", "2026-03-03 11"]
    df = read_window(s3, BUCKET, PREFIX, "iris", now - timedelta(days=30), now)
    assert df["time"].tolist() == [times["cutoff's hour"], times["younger"], times["recent"]]

    assert prune(s3, BUCKET, PREFIX, older_than_days=7, now=now) == 1  # every endpoint: "other"'s old hour
    assert not any("/other/" in k for k in keys(s3))
    assert prune(s3, BUCKET, PREFIX, older_than_days=7, now=now) == 0
    with pytest.raises(ValueError):
        prune(s3, BUCKET, PREFIX, older_than_days=0)


def test_input_frame_rebuilds_the_feature_columns_once_per_request(s3):
    rows = [{"x": 1.0, "y": 2}, {"x": 3.5, "y": 4}]
    bodies = [json.dumps(rows), json.dumps({"dataframe_records": rows}),
              json.dumps({"columns": ["x", "y"], "data": [[5.0, 6], [7.5, 8]]}),
              json.dumps({"dataframe_split": {"columns": ["x", "y"], "data": [[9.0, 10]]}}),
              pd.DataFrame({"x": [11.0], "y": [12]}),  # serialised by the log's thread
              json.dumps({"inputs": {"x": [13.0, 15.5], "y": [14, 16]}}),  # as mlflow models serve takes them
              json.dumps({"instances": [{"x": 17.0, "y": 18}]}),
              json.dumps({"prompt": "hello"}), "not json", json.dumps({"inputs": {"x": [1.0], "y": []}})]
    with InferenceLog(S3Writer(s3, BUCKET, PREFIX)) as log:
        for i, body in enumerate(bodies):
            log.record(record(i, HOUR + timedelta(seconds=i), inputs=body, mode="shadow"))
            log.record(record(i, HOUR + timedelta(seconds=i, milliseconds=3), inputs=body, mode="shadow",
                              side="candidate", latency_ms=99.0))
        assert not log.record("not a record")  # never raises
        assert log.record(record(50, HOUR, side="sideways"))  # accepted (no checks on the response path) …
        assert log.record(record(51, HOUR, latency_ms="slow"))  # … and left out of its batch, alone
    assert (log.written, log.invalid, log.dropped) == (20, 3, 3)

    df = read_window(s3, BUCKET, PREFIX, "iris", HOUR, HOUR + timedelta(hours=1))
    expected = pd.DataFrame({"x": [1.0, 3.5, 1.0, 3.5, 5.0, 7.5, 9.0, 11.0, 13.0, 15.5, 17.0],
                             "y": [2, 4, 2, 4, 6, 8, 10, 12, 14, 16, 18]})
    pd.testing.assert_frame_equal(input_frame(df), expected)
    pd.testing.assert_frame_equal(input_frame(df, side="candidate"), expected)
    assert input_frame(df.iloc[0:0]).empty
    assert json.loads(df["outputs"].iloc[0]) == [0]
