"""The live gates on a window read back from a real S3 server (SeaweedFS, started for this module): records
written through the inference log (InferenceLog + S3Writer), read with read_window, give the same report and
the same rollback reason as the records' in-memory frame."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlplatform.serving.inference_log import InferenceLog, InferenceRecord, S3Writer, read_window, schema
from mlplatform_core.catalog import LiveGates
from mlplatform_service.live_gates import breach, evaluate

from hub_config.local import seaweedfs

from ..support.seaweedfs_server import seaweedfs_server

BUCKET, PREFIX, REGION = "platform", "teams/team-vision/", "us-east-1"
# A block of its own: clear of the session platform's (base … base + 800), the other S3 servers (base + 2600,
# + 3400, + 3800 …) and the Ray heads (… base + 4399); + 4600 … + 4799.
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 4600
# 300 mirrored requests, one every 2 s, across an hour boundary (two partitions).
START = datetime(2026, 3, 10, 9, 52, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"), BASE, REGION, BUCKET) as (url, keys):
        yield seaweedfs.admin_client(url, REGION, keys)


def records() -> list[InferenceRecord]:
    """A shadow rollout whose candidate is slow on a rare input shape and fails 1 request in 50."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(300):
        wide = i % 30 == 11
        rows = [{"x1": float(rng.normal()), "x2": float(rng.normal(5, 2)), "colour": str(rng.choice(["a", "b"]))}
                for _ in range(20 if wide else 1)]
        body = json.dumps({"dataframe_records": rows})
        t = START + timedelta(seconds=2 * i, microseconds=i * 13)
        common = {"request_id": f"req-{i:05d}", "endpoint": "iris", "mode": "shadow", "time": t, "inputs": body}
        out.append(InferenceRecord(side="champion", model_version="3", status=200, outputs=json.dumps([i % 3]),
                                   latency_ms=float(rng.lognormal(np.log(12), 0.3)), **common))
        failed = i % 50 == 7
        out.append(InferenceRecord(side="candidate", model_version="4", status=500 if failed else 200,
                                   error="the model failed: ValueError: bad shape" if failed else None,
                                   outputs=None if failed else json.dumps([i % 3 if i % 20 else 1]),
                                   latency_ms=600.0 if wide else float(rng.lognormal(np.log(12), 0.3)), **common))
    return out


def in_memory(recs: list[InferenceRecord]) -> pd.DataFrame:
    rows = [{name: getattr(r, name) for name in schema().names} for r in recs]
    table = pa.Table.from_pylist(rows, schema=schema())
    return table.sort_by([("time", "ascending"), ("request_id", "ascending"), ("side", "ascending")]).to_pandas()


def test_a_window_read_from_s3_gives_the_report_of_the_records(s3):
    recs = records()
    log = InferenceLog(S3Writer(s3, BUCKET, PREFIX), batch_rows=250, flush_seconds=60)
    for r in recs:
        assert log.record(r)
    assert log.close(timeout=30)
    assert log.stats()["written"] == 600

    until = START + timedelta(minutes=10)
    read = read_window(s3, BUCKET, PREFIX, "iris", until - timedelta(minutes=10), until)
    memory = in_memory(recs)
    assert len(read) == len(memory) == 600

    reference = pd.DataFrame({"x1": np.random.default_rng(5).normal(size=1000),
                              "x2": np.random.default_rng(6).normal(5, 2, size=1000),
                              "colour": np.random.default_rng(7).choice(["a", "b"], size=1000)})
    gates = LiveGates(min_requests=250)
    from_s3 = evaluate(read, gates, reference=reference, now=until)
    expected = evaluate(memory, gates, reference=reference, now=until)
    assert from_s3.as_dict() == expected.as_dict()
    assert from_s3.candidate.requests == 300 and from_s3.candidate.errors == 6
    assert [(g.name, g.passed) for g in from_s3.gates] == [
        ("min_requests", True), ("error_rate", False), ("p99_ratio", False), ("drift", True)]
    # The candidate answers [1] where i % 20 == 0: a disagreement where i % 3 != 1 (10 of those 15).
    assert from_s3.agreement.pairs == 294 and from_s3.agreement.agreed == 294 - 10
    assert from_s3.breach == breach(read, gates, now=until) == breach(memory, gates, now=until)
    assert from_s3.breach.startswith("candidate error rate 2% (6 of 300 answers with HTTP status ≥ 500) is above "
                                     "the allowed 1%; candidate p99 600 ms is ")
