"""The platform service's promotion engine, in the test process, on the session's real MLflow.

`engine(platform, tmp_path)` is what the service runs (mlplatform_service.promotion.Promotions) with
its own SQLite database in `tmp_path`, acting in MLflow as the platform identity (the test process's
token), in MLflow's default workspace; `tracking_uri=` puts a proxy in between. End-to-end tests
through the hub-managed service are in tests/integration/test_platform_service.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

from mlplatform_core.catalog import Promotion, load_catalog

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.cards import CardStore
from mlplatform_service.database import connect
from mlplatform_service.platform_mlflow import PlatformMlflow
from mlplatform_service.promotion import Caller, Promotions

TEAM = "team-vision"
POLICY = Promotion(alias="champion", metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.9}],
                   compare_with_champion=True, require_signature=True, model_card_fields=["intended_use", "owner"])


def caller(name: str = "alice", teams: tuple[str, ...] = (TEAM,), admin: bool = False) -> Caller:
    return Caller(name=name, teams=teams, admin=admin)


def engine(platform, tmp_path, *, tracking_uri: str | None = None, promotion: Promotion = POLICY,
           mlflow: PlatformMlflow | None = None) -> Promotions:
    catalog = load_catalog(DEFAULT_CATALOG).model_copy(update={"promotion": promotion})
    sessions = connect(f"sqlite:///{tmp_path / 'platform.sqlite'}")
    mlflow = mlflow or PlatformMlflow(tracking_uri or platform.mlflow_url, None, workspaces=False)
    return Promotions(catalog=lambda: catalog, audit=AuditLog(sessions), cards=CardStore(sessions), mlflow=mlflow)


class Registry:
    """The promotion engine as Rollouts.start uses it, where no MLflow runs: every candidate version exists."""

    @contextmanager
    def guarded_mlflow(self, team, nothing_done):
        yield SimpleNamespace(get_model_version=lambda model, version: SimpleNamespace(version=version))
