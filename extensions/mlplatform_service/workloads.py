"""Admission of the teams' Kubernetes workloads: budgets, attribution and the audit of deploy and submit.

On Kubernetes a notebook creates its RayServices and SparkApplications itself, with its team's service
account; no platform code runs on that path. The API server does: the rendered ValidatingWebhookConfiguration
(hub_config/render/workload_webhook.py) sends every create, update and delete of those two kinds in a
team namespace to the service (webhook.py), whoever sends it (the widgets, the Python API, kubectl).
`WorkloadAdmission.decide` answers each AdmissionReview:

- CREATE, UPDATE: the GPUs the object may run — per pod template GPUs × (the worker group's maxReplicas
  when Ray's autoscaler is on, else its replicas; Spark: the driver + executor instances, or
  dynamicAllocation.maxExecutors) — are admitted against the team's budget with the spawns' rule
  (admission.py): the ledger's allocation `model:<team>/<name>` / `spark:<team>/<name>` is opened or
  resized under the team's lock, so concurrent deploys never together pass the budget; refused: 409
  with the numbers. The hub's reconcile (hub_config/spawners/kube_usage.py) then keeps the interval
  what the pods really hold. GPUs must name their type (the label `mlplatform.io/gpu-type` that the
  quota cache counts and the ledger prices); the user label must be the sender's own (no usage
  charged to someone else).
- Every admitted change is audited as the action it is — deploy, redeploy (the spec changed), delete;
  submit, cancel (deleting an application still running), delete — with outcome `admitted` (the API
  server may still fail to store it) and the identity the API server authenticated: the hub user
  whose notebook pod holds the service-account token (bound tokens name the pod), else the
  Kubernetes user. Updates that leave the spec alone (labels, finalizers) pass unrecorded.
- Dry runs (`dryRun: true`) get the same answer and record nothing (the webhook's sideEffects
  NoneOnDryRun).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlplatform_core.catalog import Catalog
from mlplatform_core.names import GPU_TYPE_LABEL, USER_LABEL, label_value
from mlplatform_core.quantities import gpu_requests, parse_count

from .admission import admit
from .audit_log import AuditLog
from .budgets import BudgetExceeded, Budgets
from .overrides import Overrides

# resource → (ledger kind, key prefix, action per operation)
KINDS = {
    ("ray.io", "rayservices"): ("model", {"CREATE": "deploy", "UPDATE": "redeploy", "DELETE": "delete"}),
    ("sparkoperator.k8s.io", "sparkapplications"): ("spark", {"CREATE": "submit", "UPDATE": "submit",
                                                              "DELETE": "cancel"}),
}
SPARK_FINISHED = {"COMPLETED", "FAILED", "SUBMISSION_FAILED"}  # the operator's terminal application states


@dataclass(frozen=True)
class Actor:
    """Who sends the request: a hub user (from their notebook pod) or a Kubernetes identity."""
    name: str
    hub_user: bool


class Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Allocation:
    gpus: int
    gpu_type: str | None


class WorkloadAdmission:
    def __init__(self, catalog: Callable[[], Catalog], audit: AuditLog, budgets: Budgets, overrides: Overrides):
        self.catalog, self.audit, self.budgets, self.overrides = catalog, audit, budgets, overrides

    def decide(self, request: Mapping[str, Any], actor: Actor) -> dict[str, Any]:
        """The AdmissionReview `response` for `request` (an AdmissionReview's `request`)."""
        uid = request.get("uid", "")
        try:
            warnings = self._decide(request, actor)
        except Refused as refused:
            return {"uid": uid, "allowed": False, "status": {
                "code": refused.code, "reason": _REASONS.get(refused.code, "Forbidden"), "message": refused.message}}
        return {"uid": uid, "allowed": True, **({"warnings": warnings} if warnings else {})}

    def _decide(self, request: Mapping[str, Any], actor: Actor) -> list[str]:
        resource = request.get("resource") or {}
        kind = KINDS.get((resource.get("group"), resource.get("resource")))
        team = self._team(request.get("namespace"))
        if kind is None or team is None or request.get("subResource"):
            return []  # not a team's workload: not this webhook's business (its rules say the same)
        ledger_kind, actions = kind
        operation, name = request.get("operation"), request.get("name") or ""
        new, old = request.get("object"), request.get("oldObject")
        dry_run = bool(request.get("dryRun"))
        key = f"{ledger_kind}:{team}/{name}"
        if operation == "DELETE":
            action = actions["DELETE"]
            if ledger_kind == "spark" and _spark_state(old) in SPARK_FINISHED:
                action = "delete"  # a finished application: nothing left to cancel
            self._record(action, actor, team, key, old, None, dry_run)
            return []
        if operation not in ("CREATE", "UPDATE") or not isinstance(new, Mapping):
            return []
        if operation == "UPDATE" and isinstance(old, Mapping) and old.get("spec") == new.get("spec"):
            return []  # metadata only (labels, finalizers): nothing runs differently
        allocation = self._allocation(ledger_kind, new)
        user = self._user(new, actor)
        try:
            admission = admit(self.audit, self.budgets, self.overrides, key, actor=actor.name, kind=ledger_kind,
                              team=team, user=user, gpu_type=allocation.gpu_type, gpus=allocation.gpus,
                              model=name if ledger_kind == "model" else None, dry_run=dry_run)
        except BudgetExceeded as e:
            raise Refused(e.status, e.message) from None
        self._record(actions[operation], actor, team, key, new, allocation, dry_run)
        status = admission.status
        return [status.line] if status is not None and status.warning else []

    # --- what the object is --------------------------------------------------------------------

    def _team(self, namespace: str | None) -> str | None:
        return next((name for name, team in self.catalog().teams.items() if team.namespace == namespace), None)

    def _allocation(self, ledger_kind: str, obj: Mapping) -> Allocation:
        catalog = self.catalog()
        resources = {gpu.resource for gpu in catalog.gpu_types.values()}
        pods = _ray_pods(obj) if ledger_kind == "model" else _spark_pods(obj, resources)
        gpus, types = 0, set()
        for template, count in pods:
            per_pod = gpu_requests(template, resources)
            if per_pod and count:
                gpus += per_pod * count
                types.add(((template.get("metadata") or {}).get("labels") or {}).get(GPU_TYPE_LABEL))
        if not gpus:
            return Allocation(0, None)
        known = sorted(catalog.gpu_types)
        unknown = sorted(str(t) for t in types if t not in catalog.gpu_types)
        if unknown or len(types) != 1:
            shown = ", ".join(unknown) or ", ".join(sorted(map(str, types)))
            raise Refused(422, f"labels[{GPU_TYPE_LABEL}] of the pods with GPUs: {shown} is not allowed; allowed: "
                               f"one of {', '.join(known)} on every pod with GPUs (the platform counts and prices "
                               "GPUs by their type)")
        return Allocation(gpus, types.pop())

    def _user(self, obj: Mapping, actor: Actor) -> str:
        """Whom the ledger charges: the object's user label, which must be the sender's own."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        claimed = labels.get(USER_LABEL)
        if actor.hub_user:
            own = label_value(actor.name)
            if claimed is not None and claimed != own:
                raise Refused(403, f"metadata.labels[{USER_LABEL}]: {claimed!r} is not allowed; allowed: {own!r} "
                                   f"(the user whose notebook sends this: {actor.name})")
            return own
        return claimed or actor.name

    def _record(self, action: str, actor: Actor, team: str, key: str, obj: Mapping | None,
                allocation: Allocation | None, dry_run: bool) -> None:
        if dry_run:
            return
        meta = (obj or {}).get("metadata") or {}
        details = {"namespace": meta.get("namespace"), "name": meta.get("name"), "via": "kubernetes"}
        if allocation is not None:
            details |= {"gpus": allocation.gpus, "gpu_type": allocation.gpu_type}
        self.audit.append(action, actor=actor.name, team=team, target=key, outcome="admitted", details=details)


_REASONS = {400: "BadRequest", 403: "Forbidden", 409: "Conflict", 422: "Invalid"}


def _ray_pods(obj: Mapping) -> list[tuple[Mapping, int]]:
    """(pod template, how many of it may run) of a RayService's cluster."""
    cluster = (obj.get("spec") or {}).get("rayClusterConfig") or {}
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    out = [((cluster.get("headGroupSpec") or {}).get("template") or {}, 1)]
    for group in cluster.get("workerGroupSpecs") or []:
        replicas = _count(group.get("replicas"), 1)
        most = max(replicas, _count(group.get("maxReplicas"), replicas)) if autoscaling else replicas
        out.append((group.get("template") or {}, most * max(1, _count(group.get("numOfHosts"), 1))))
    return out


def _spark_pods(obj: Mapping, resources: set[str]) -> list[tuple[Mapping, int]]:
    """The driver and executors of a SparkApplication as pod templates holding their `gpu` asks."""
    spec = obj.get("spec") or {}
    dynamic = spec.get("dynamicAllocation") or {}
    executors = _count((spec.get("executor") or {}).get("instances"), 1)
    if dynamic.get("enabled"):
        executors = max(executors, _count(dynamic.get("maxExecutors"), executors))
    out = []
    for role, count in (("driver", 1), ("executor", executors)):
        pod = spec.get(role) or {}
        gpu = pod.get("gpu") or {}
        limits = {gpu["name"]: gpu.get("quantity", 0)} if gpu.get("name") in resources else {}
        template = {"metadata": {"labels": {**((obj.get("metadata") or {}).get("labels") or {}),
                                            **(pod.get("labels") or {})}},
                    "spec": {"containers": [{"resources": {"limits": limits}}]}}
        out.append((template, count))
    return out


def _count(value, default: int) -> int:
    try:
        return max(0, math.ceil(parse_count(value))) if value is not None else default
    except (TypeError, ValueError, ArithmeticError):
        return default


def _spark_state(obj: Mapping | None) -> str | None:
    return (((obj or {}).get("status") or {}).get("applicationState") or {}).get("state")
