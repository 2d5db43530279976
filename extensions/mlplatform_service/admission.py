"""Budget admission as the platform applies it everywhere: the team's budget, else an admin's override, audited.

One rule for every allocation point: the hub's spawns and local GPU reservations (hub_config/governance.py)
and the Kubernetes workloads the API server sends to the service's admission webhook (workloads.py).
A refusal is audited (`budget-refusal`) and raised; an allocation an override admits is audited
(`budget-override`) under the granting admin's name. A dry run answers the same and records nothing.
"""

from __future__ import annotations

from .audit_log import AuditLog
from .budgets import Admission, BudgetExceeded, Budgets
from .overrides import Overrides


def admit(audit: AuditLog, budgets: Budgets, overrides: Overrides, key: str, *, actor: str, kind: str, team: str,
          user: str, gpu_type: str | None, gpus: int, profile: str | None = None, model: str | None = None,
          dry_run: bool = False) -> Admission:
    """Open allocation `key` if the team's budget (or an override in force) takes it; else BudgetExceeded (409)."""
    allocation = dict(kind=kind, team=team, user=user, gpu_type=gpu_type, gpus=gpus, profile=profile, model=model)
    try:
        return budgets.admit(key, **allocation, dry_run=dry_run)
    except BudgetExceeded as e:
        override = overrides.active(team)
        if override is None:
            if not dry_run:
                audit.append("budget-refusal", actor=actor, team=team, target=key, outcome="refused",
                             details={"gpu_type": gpu_type, "gpus": gpus, "message": e.message})
            raise
    admission = budgets.admit(key, **allocation, override_by=override.granted_by, dry_run=dry_run)
    if not dry_run:
        audit.append("budget-override", actor=override.granted_by, team=team, target=key, outcome="succeeded",
                     details={"for": actor, "override": override.id, "reason": override.reason,
                              "gpu_type": gpu_type, "gpus": gpus})
    return admission
