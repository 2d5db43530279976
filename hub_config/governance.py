"""The hub's part of governance: budgets at spawn, the usage ledger of servers, the audit of what the hub does.

The hub and the platform service share one database (the catalog's `platform_service.database_url`,
or `c.Governance.database_url`): the hub admits servers against their team's budget and records
their allocation interval there (spawn → stop), and appends its own actions to the audit log — login,
spawn, stop, credential vends, budget refusals and overrides — with the identity it authenticated.

Budget admission is policy: it fails closed (no database, no GPU server beyond what the budget says).
An audit record of a login or a credential vend is evidence, not policy: if the database is
unreachable it is logged as an error and the action goes on (the platform stays usable; the gap is
visible in the hub's log).
"""

from __future__ import annotations

import logging
import os

from mlplatform_core.catalog import Catalog, cached_catalog
from mlplatform_service.admission import admit
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.budgets import Admission, Budgets, BudgetStatus
from mlplatform_service.database import connect
from mlplatform_service.overrides import Overrides
from mlplatform_service.usage import UsageLedger
from traitlets import Unicode, default
from traitlets.config import Configurable

from .catalog import configured_catalog_path

log = logging.getLogger("JupyterHub")


class Governance(Configurable):
    database_url = Unicode(config=True, help="""
        SQLAlchemy URL of the platform service's database (shared with the service). Default:
        $MLPLATFORM_SERVICE_DATABASE_URL, else the catalog's `platform_service.database_url`.
        """)

    @default("database_url")
    def _default_database_url(self):
        return os.environ.get("MLPLATFORM_SERVICE_DATABASE_URL", "")
    catalog_file = Unicode(config=True, help="The platform catalog (default: $MLPLATFORM_CATALOG, else the bundled one).")

    @default("catalog_file")
    def _default_catalog_file(self):
        return configured_catalog_path()

    _instances: dict[tuple[str, str], Governance] = {}

    @classmethod
    def of(cls, config, catalog_file: str | None = None) -> Governance:
        """The hub's one instance for its config (spawners and handlers share its connections); a
        spawner names its own catalog file (c.<Spawner>.catalog_file)."""
        probe = cls(config=config, **({"catalog_file": catalog_file} if catalog_file else {}))
        key = (probe.database_url, probe.catalog_file)
        return cls._instances.setdefault(key, probe)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._stores = None

    @property
    def catalog(self) -> Catalog:
        return cached_catalog(self.catalog_file)

    def stores(self) -> tuple[AuditLog, UsageLedger, Budgets, Overrides]:
        if self._stores is None:  # connected on first use: a hub without the service's database still starts
            sessions = connect(self.database_url or self.catalog.platform_service.database_url)
            ledger = UsageLedger(sessions, lambda: self.catalog)
            self._stores = (AuditLog(sessions), ledger, Budgets(ledger), Overrides(sessions))
        return self._stores

    # --- budgets ------------------------------------------------------------------------------------
    def status(self, team: str) -> BudgetStatus:
        return self.stores()[2].status(team)

    def admit(self, key: str, *, kind: str, team: str, user: str, gpu_type: str | None, gpus: int,
              profile: str | None = None, model: str | None = None) -> Admission:
        """Open the allocation if the team's budget (or an admin's override in force) takes it; else
        audit the refusal and raise BudgetExceeded (409) with the numbers."""
        audit, _, budgets, overrides = self.stores()
        return admit(audit, budgets, overrides, key, actor=user, kind=kind, team=team, user=user, gpu_type=gpu_type,
                     gpus=gpus, profile=profile, model=model)

    def release(self, key: str) -> None:
        self.stores()[2].release(key)

    def transfer(self, source: str, target: str, *, kind: str, team: str, user: str, gpu_type: str | None, gpus: int,
                 model: str | None = None) -> None:
        """`source`'s allocation continues as `target` (a promoted rollout candidate's GPUs, which become the
        champion's): admitted already, so opened without a budget check; `source` ends."""
        _, ledger, budgets, _ = self.stores()
        ledger.open(target, kind=kind, team=team, user=user, gpu_type=gpu_type, gpus=gpus, model=model)
        budgets.release(source)

    # --- the audit log ------------------------------------------------------------------------------
    def record(self, action: str, *, actor: str, target: str, outcome: str, team: str | None = None,
               details: dict | None = None) -> None:
        try:
            self.stores()[0].append(action, actor=actor, target=target, outcome=outcome, team=team, details=details)
        except Exception:
            log.exception("Could not write the audit record of %s %s by %s (%s)", action, target, actor, outcome)
