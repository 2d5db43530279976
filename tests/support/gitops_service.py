"""The platform service's GitOps changes (mlplatform_service.gitops_changes) in the test's process, and the
notebook's GitOps client calling them as a given user: the Kubernetes tests run the notebook's backends, the
service's checks and commits, a real Git server and Argo CD's stand-in together. The HTTP layer and the hub's
identity in front of the same calls are the integration tests' (tests/integration/test_gitops_service.py).

    service = gitops_service(catalog, database_url, repository)
    client = InProcessGitOps.of(service, caller("alice", "team-vision"))
    KubernetesServing(config, gitops=client).deploy(...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from mlplatform.gitops import GitOps, GitOpsRefused
from mlplatform.registry.errors import RegistryError
from mlplatform_core.catalog import Catalog
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.budgets import Budgets
from mlplatform_service.database import connect
from mlplatform_service.gitops import GitOpsRepository
from mlplatform_service.gitops_changes import GitOpsChanges
from mlplatform_service.overrides import Overrides
from mlplatform_service.promotion import Caller
from mlplatform_service.usage import UsageLedger
from mlplatform_service.workloads import WorkloadAdmission


def gitops_service(catalog: Catalog, database_url: str, repository: GitOpsRepository) -> SimpleNamespace:
    """The service's GitOps changes with its stores on `database_url`: .changes, .audit, .ledger, .budgets."""
    sessions = connect(database_url)
    ledger = UsageLedger(sessions, lambda: catalog)
    audit, budgets = AuditLog(sessions), Budgets(ledger)
    workloads = WorkloadAdmission(lambda: catalog, audit, budgets, Overrides(sessions))
    changes = GitOpsChanges(catalog=lambda: catalog, audit=audit, workloads=workloads, repository=lambda: repository)
    return SimpleNamespace(changes=changes, audit=audit, ledger=ledger, budgets=budgets)


def caller(name: str, *teams: str, admin: bool = False) -> Caller:
    return Caller(name=name, teams=teams, admin=admin)


@dataclass(frozen=True)
class InProcessGitOps(GitOps):
    """mlplatform.gitops.GitOps whose calls reach GitOpsChanges directly, as `caller`."""

    changes: Any = field(default=None, repr=False)
    caller: Any = None

    @classmethod
    def of(cls, service: SimpleNamespace, who: Caller, team: str | None = None, mode: str = "direct") -> InProcessGitOps:
        return cls(team=team or who.teams[0], mode=mode, service_url="in-process", token="", changes=service.changes,
                   caller=who)

    def _call(self, method: str, kind: str, name: str, body: dict | None) -> dict[str, Any]:
        body = body or {}
        try:
            if method == "PUT":
                return self.changes.put(self.caller, self.team, kind, name, body["object"], body.get("message", ""))
            if method == "DELETE":
                return self.changes.delete(self.caller, self.team, kind, name, body.get("message", ""))
            return self.changes.get(self.caller, self.team, kind, name)
        except RegistryError as e:  # as the service's handler answers it
            raise GitOpsRefused(e.status, str(e)) from None
