"""The platform service's daily retention of the inference logs (`serving.inference_log.retention_days`): every
team's hours older than that go, younger ones and other files stay (a real S3 server, SeaweedFS)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from mlplatform.serving.inference_log import InferenceLog, InferenceRecord, S3Writer

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.local import seaweedfs
from mlplatform_core.catalog import load_catalog
from mlplatform_service.rollouts import Rollouts

from ..support.seaweedfs_server import seaweedfs_server

CATALOG = load_catalog(DEFAULT_CATALOG, environ={})
S3 = CATALOG.storage.s3
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 4800  # clear of the other S3 servers
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"), BASE, S3.region, S3.bucket) as (url, keys):
        yield seaweedfs.admin_client(url, S3.region, keys)


def log_at(s3, team: str, when: datetime) -> None:
    with InferenceLog(S3Writer(s3, S3.bucket, S3.team_prefix.format(team=team, username=""))) as log:
        log.record(InferenceRecord(request_id=f"{team}-{when:%j%H}", endpoint="iris", side="champion", mode="shadow",
                                   model_version="1", latency_ms=1.0, status=200, time=when))


def folders(s3) -> list[str]:
    """The folder of every object in the bucket (an inference-log partition: .../date=.../hour=...)."""
    return sorted(o["Key"].rsplit("/", 1)[0] for o in s3.list_objects_v2(Bucket=S3.bucket).get("Contents", []))


def test_hours_older_than_the_retention_go_for_every_team(s3):
    days = CATALOG.serving.inference_log.retention_days
    for team in CATALOG.teams:
        log_at(s3, team, datetime(2026, 10, 1, 9, tzinfo=UTC))   # older than 30 days: goes
        log_at(s3, team, datetime(2026, 11, 30, 9, tzinfo=UTC))  # younger: stays
    s3.put_object(Bucket=S3.bucket, Key="teams/team-vision/notes.txt", Body=b"not the log's")
    rollouts = Rollouts(catalog=lambda: CATALOG, audit=None, promotions=None, backend=None, s3=lambda: s3)
    assert days == 30 and rollouts.prune_inference_logs(now=NOW) == len(CATALOG.teams)
    assert folders(s3) == sorted([f"teams/{t}/inference-log/iris/date=2026-11-30/hour=09" for t in CATALOG.teams]
                                 + ["teams/team-vision"])  # notes.txt: not the log's, left alone
    assert rollouts.prune_inference_logs(now=NOW) == 0
