"""The platform service applies the catalog's audit retention (at start and daily): records older than
`platform_service.audit_retention_days` go, the chain still verifies from the anchor they leave."""

from datetime import UTC, datetime

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform_service.app import Platform
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.database import connect


def test_records_older_than_the_retention_go_and_the_chain_verifies(tmp_path):
    url = f"sqlite:///{tmp_path / 'platform.sqlite'}"
    clock = iter([datetime(2010, 1, 1, tzinfo=UTC), datetime(2011, 1, 1, tzinfo=UTC), datetime.now(UTC)])
    old = AuditLog(connect(url), clock=lambda: next(clock))
    for user in ("alice", "bob", "carol"):
        old.append("login", actor=user, target=f"user:{user}", outcome="succeeded")
    platform = Platform(str(DEFAULT_CATALOG), url, None)  # retention: seven years (2557 days)
    platform.apply_retention()
    assert [r["actor"] for r in platform.audit.query()] == ["carol"]
    result = platform.audit.verify()
    assert (result.ok, result.checked, result.anchor_seq, result.first_seq) == (True, 1, 2, 3)
    platform.apply_retention()  # nothing more to drop
    assert [r["seq"] for r in platform.audit.query()] == [3]
