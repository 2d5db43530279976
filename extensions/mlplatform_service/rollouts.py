"""Safe rollout, owned by the platform (issue 12): a candidate version beside an endpoint's champion in
shadow or canary mode, promoted only when the live gates pass, and rolled back by the controller when
it breaches the SLO, with the notebook closed.

    rollouts.start(caller, "team-vision", "iris", version="4", mode="shadow")
    rollouts.change(caller, "team-vision", "iris", mode="canary", share=0.05)
    rollouts.report(caller, "team-vision", "iris")     # the endpoint's status and the live report
    rollouts.promote(caller, "team-vision", "iris")    # offline + live gates → @champion, all traffic; the
                                                       # drift report kept in the candidate's run (drift/)
    rollouts.abort(caller, "team-vision", "iris")      # the candidate goes; the champion keeps everything
    rollouts.set_inference_log(caller, "team-vision", "iris", sample_rate=0.1)   # or enabled=False / True
    rollouts.check()                                   # the controller's pass, every check_every_seconds

The live numbers come from the endpoint's inference log (serving/inference_log.py), read with the service's own S3
identity: the rollout gateway's evidence under the platform's prefix (evidence.py; on a cluster each team's gateway
pod writes it, gateway_pod.py); the gates and the SLO from the catalog (`promotion.live_gates`,
per team `teams.<team>.live_gates`). The window of a rollout starts when it starts, and again when traffic
comes back to the candidate after a rollback (the rollout's `since`), so old answers never decide.

The inference log is the live gates' only evidence, so it cannot be switched off while the candidate gets traffic
(shadow or canary: 409 naming `enabled`; mode off or abort first), and shadow or canary cannot be chosen while it is
off (409 naming `mode`): otherwise a breaching candidate would never be rolled back, and a promotion would wait for
data forever. Its sample rate may change at any time (fewer records: the gates wait longer for `min_requests`).

Audit: `rollout` (details.change: start, change, inference_log, abort), `promote` (the promotion engine's, with the live
gates in its report), `rollback` by the controller (actor `platform`, details.automatic, the reason). In GitOps
mode on Kubernetes each change is a commit (rollout_backends.py), authored by the caller (`platform` for the
controller): its sha is the record's details.commit, and a promotion's commit gets a `rollout` record of its own
(details.change: promote) after the promotion engine's.
Members of the endpoint's team (and admins) act on its rollout; a refusal is audited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from mlplatform.registry.errors import Conflict, Forbidden, NotFound
from mlplatform.serving.errors import InvalidServingRequest, ServingConflict
from mlplatform.serving.inference_log import prune, read_window
from mlplatform.serving.rollout import LIVE_MODES, Rollout, log_switch, rollout
from mlplatform.serving.spec import MODEL_URI
from mlplatform_core.catalog import Catalog

from . import drift, live_gates
from .audit_log import AuditLog
from .evidence import PLATFORM_PREFIX, evidence_prefix
from .promotion import Caller, Promotions
from .rollout_backends import RolloutBackend

log = logging.getLogger(__name__)
PLATFORM = "platform"  # the controller's actor in the audit log
VERSION_DIGITS = 12
REFERENCES_KEPT = 32  # candidates' reference data held in memory (each up to 10,000 rows)
# How a refusal names each action ("bob may not <verb> the rollout of 'iris'").
VERBS = {"inference_log": "switch the inference log of"}


class Rollouts:
    def __init__(self, *, catalog: Callable[[], Catalog], audit: AuditLog, promotions: Promotions,
                 backend: RolloutBackend, s3: Callable[[], Any]):
        self.catalog, self.audit, self.promotions, self.backend = catalog, audit, promotions, backend
        self.s3 = s3  # an S3 client of the service's identity (reads the teams' inference logs)
        self._lock = threading.Lock()  # one change of any rollout at a time (the controller's too)
        # Reference data per (team, models:/<name>/<version>): a version's is fixed, and the widget polls
        # the report every few seconds, so it is read from MLflow once (the latest REFERENCES_KEPT kept).
        self._references: OrderedDict[tuple[str, str], Any] = OrderedDict()
        # GitOps mode: the last commit of each endpoint's rollout (its steps' answers; after a restart, Git's), for
        # the report: the widget links it. Endpoints are few; an entry is a small dict.
        self._commits: dict[tuple[str, str], dict | None] = {}

    # --- what users do ----------------------------------------------------------------------------
    def start(self, caller: Caller, team: str, name: str, *, version: Any, mode: Any = "shadow", share: Any = None,
              mirror_rate: Any = 1.0) -> dict:
        from mlflow.exceptions import MlflowException  # at first use (platform_mlflow.py)

        self._check_team(caller, team, name, "start")
        settings = rollout(mode=mode, share=share, mirror_rate=mirror_rate)
        version = _version(version)
        with self._lock:
            status = self.backend.status(team, name)
            model = _model_of(status)
            # The version exists, in the team's workspace; MLflow not answering is a 503, as for promotions.
            with self.promotions.guarded_mlflow(team, "no rollout was started") as client:
                try:
                    client.get_model_version(model, version)
                except MlflowException as e:
                    if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    raise NotFound(f"model {model!r} has no version {version} in team {team}'s workspace: "
                                   f"{e.message}") from None
            settings = _since_now(settings)
            status = self.backend.start(team, name, model_version=version, requested_uri=f"models:/{model}/{version}",
                                        rollout=settings, inference_log=self.catalog().serving.inference_log.model_dump(),
                                        actor=caller.name)
        self._remember(team, name, status)
        self._audit("rollout", caller.name, team, name, {"change": "start", "model": model, "candidate_version": version,
                                                         **_shown(settings), **_commit(status)})
        return status

    def change(self, caller: Caller, team: str, name: str, *, mode: Any, share: Any = None, mirror_rate: Any = 1.0) -> dict:
        self._check_team(caller, team, name, "change")
        settings = rollout(mode=mode, share=share, mirror_rate=mirror_rate)
        with self._lock:
            current = self._rollout(team, name)
            before = current["rollout"] or {}
            if settings.mode in LIVE_MODES and current.get("inference_log") is None:
                raise ServingConflict(
                    f"mode {settings.mode!r} refused: the inference log of {name!r} is off (enabled: false), and the "
                    "live gates and the automatic rollback read it; switch it on first "
                    "(rollouts.inference_log(name, enabled=True)); nothing was changed")
            # Back from a rollback (or from off): a fresh window, so the old breach does not decide again.
            since = before.get("since") if before.get("mode") not in (None, "off") else None
            settings = _since_now(settings) if since is None else Rollout(**{**settings.to_dict(), "since": since})
            status = self.backend.change(team, name, settings, actor=caller.name)
        self._remember(team, name, status)
        self._audit("rollout", caller.name, team, name, {"change": "change", "from_mode": before.get("mode"),
                                                         "candidate_version": current["model_version"],
                                                         **_shown(settings), **_commit(status)})
        return status

    def set_inference_log(self, caller: Caller, team: str, name: str, *, enabled: Any = None,
                          sample_rate: Any = None) -> dict:
        """The rollout's inference log on or off, or another sample rate: a change of the gateway's traffic map,
        applied in place (no request dropped). On again: the settings it had, else the catalog's
        `serving.inference_log`. Off is refused while the candidate gets traffic (the module's docstring)."""
        self._check_team(caller, team, name, "inference_log")
        enabled, sample_rate = log_switch(enabled=enabled, sample_rate=sample_rate)
        with self._lock:
            current = self._rollout(team, name)
            before, mode = current.get("inference_log"), (current.get("rollout") or {}).get("mode")
            settings = self._log_settings(name, mode, before, enabled, sample_rate)
            status = self.backend.set_inference_log(team, name, settings, actor=caller.name)
        self._remember(team, name, status)
        self._audit("rollout", caller.name, team, name, {
            "change": "inference_log", "candidate_version": current["model_version"], "enabled": settings is not None,
            "sample_rate": settings["sample_rate"] if settings else None, "was_enabled": before is not None,
            **_commit(status)})
        return status

    def _log_settings(self, name: str, mode: str | None, before: dict | None, enabled: bool | None,
                      sample_rate: float | None) -> dict | None:
        """The inference log's settings after a change (None: off), or ServingConflict."""
        if enabled is False:
            if mode in LIVE_MODES:
                raise ServingConflict(
                    f"enabled: false refused: {name!r} is in {mode}, and the live gates and the automatic rollback "
                    "read its inference log (without records a breaching candidate is never rolled back and a "
                    "promotion waits for data); set the mode off (rollouts.change(name, 'off')) or abort the rollout "
                    "first; a lower sample_rate (above 0, at most 1) logs less; nothing was changed")
            return None
        if before is None and enabled is None:
            raise ServingConflict(f"sample_rate {sample_rate} refused: the inference log of {name!r} is off; switch "
                                  "it on with enabled: true (and this sample_rate); nothing was changed")
        settings = dict(before or self.catalog().serving.inference_log.model_dump())
        if sample_rate is not None:
            settings["sample_rate"] = sample_rate
        return settings

    def abort(self, caller: Caller, team: str, name: str) -> dict:
        self._check_team(caller, team, name, "abort")
        with self._lock:
            current = self._rollout(team, name)
            status = self.backend.end(team, name, promote=False, actor=caller.name)
        self._remember(team, name, status)
        self._audit("rollout", caller.name, team, name, {"change": "abort", "candidate_version": current["model_version"],
                                                         **_commit(status)})
        return status

    def report(self, caller: Caller, team: str, name: str) -> dict:
        """The endpoint's status and, in rollout, the live report of its window (changes nothing)."""
        self._check_team(caller, team, name, "read", audited=False)
        status = self.backend.status(team, name)
        commit = self._last_commit(team, name)
        if not status.get("rollout"):
            return {"status": status, "live": None, "commit": commit}
        return {"status": status, "live": self._evaluate(team, name, status).as_dict(), "commit": commit}

    def promote(self, caller: Caller, team: str, name: str) -> dict:
        """The candidate becomes the catalog's alias (the promotion engine: offline gates, the model card,
        the audit), with the live gates besides, then gets all the traffic. Refused (409, the report)
        while a gate fails or waits for data."""
        self._check_team(caller, team, name, "promote")
        with self._lock:
            status = self.backend.status(team, name)
            current = self._rollout(team, name, status)
            model, version = _model_of(status), current["model_version"]
            live = self._evaluate(team, name, status)
            gates = [{"id": f"live {g.name}", "kind": "live", "passed": g.passed is True, "message": g.message,
                      "value": g.as_dict()["value"], "threshold": g.as_dict()["limit"]} for g in live.gates]
            try:
                promoted = self.promotions.promote(caller, team, model, version, live_gates=gates)
            except Conflict as e:  # the alias holds the candidate already (a promotion whose switch failed)
                if "nothing to promote" not in str(e):
                    raise
                promoted = {"action": "promote", "model": model, "team": team, "version": version, "already": True}
            status = self.backend.end(team, name, promote=True, actor=caller.name)
        self._remember(team, name, status)
        if _commit(status):  # GitOps mode: the promotion's own record precedes the commit that moves the traffic
            self._audit("rollout", caller.name, team, name, {"change": "promote", "candidate_version": version,
                                                             **_commit(status)})
        return {**promoted, "status": status, "live": live.as_dict(),
                "drift_report": self._store_drift(team, model, version, live)}

    # --- the controller ---------------------------------------------------------------------------
    def check(self, now: datetime | None = None) -> list[dict]:
        """One pass over every endpoint in shadow or canary: traffic back to the champion (mode off, the
        reason kept in the rollout) where the candidate breaches the SLO. Answers what it rolled back."""
        rolled_back = []
        for team, name, status in self.backend.active():
            settings = (status.get("rollout") or {}).get("rollout") or {}
            if settings.get("mode") not in ("shadow", "canary"):
                continue
            try:
                gates = self.catalog().live_gates_for(team)
                frame = self._window(team, name, settings, gates, now)
                reason = live_gates.breach(frame, gates, now=now)
                if reason:
                    rolled_back.append(self._roll_back(team, name, settings, reason))
            except Exception:  # one endpoint's trouble never stops the others' checks
                log.exception("rollout check of %s/%s failed; it runs again at the next pass", team, name)
        return rolled_back

    def _roll_back(self, team: str, name: str, settings: dict, reason: str) -> dict:
        with self._lock:
            status = self.backend.status(team, name)
            current = (status.get("rollout") or {}).get("rollout") or {}
            if current.get("mode") not in ("shadow", "canary") or current.get("since") != settings.get("since"):
                return {}  # changed meanwhile by its team: their choice stands, checked again next pass
            off = Rollout(mode="off", mirror_rate=current.get("mirror_rate", 1.0), reason=reason,
                          since=current.get("since"))
            changed = self.backend.change(team, name, off, actor=PLATFORM)
        self._remember(team, name, changed)
        details = {"endpoint": name, "model": _model_of(status), "candidate_version": status["rollout"]["model_version"],
                   "from_mode": current["mode"], "share": current.get("share"), "reason": reason, "automatic": True,
                   **_commit(changed)}
        self._audit("rollback", PLATFORM, team, name, details)
        log.warning("rolled %s/%s back to the champion: %s", team, name, reason)
        return {"team": team, **details}

    def prune_inference_logs(self, now: datetime | None = None) -> int:
        """The inference log's retention (`serving.inference_log.retention_days`), every team's evidence and the
        team's own prefix (where the replicas logged before the gateway did): hours older than that are deleted.
        Run at the service's start and daily; answers how many files went."""
        catalog = self.catalog()
        s3, days, deleted = catalog.storage.s3, catalog.serving.inference_log.retention_days, 0
        for team in catalog.teams:
            try:
                for prefix in {s3.team_prefix.format(team=team, username=""), evidence_prefix(PLATFORM_PREFIX, team)}:
                    deleted += prune(self.s3(), s3.bucket, prefix, older_than_days=days, now=now)
            except Exception as e:  # no S3 identity for the service, S3 down: said once a day, no traceback
                log.warning("the inference log's retention did not run for team %s (%s: %s); it runs again in a day",
                            team, type(e).__name__, e)
        if deleted:
            log.info("inference log retention: %s files older than %s days removed", deleted, days)
        return deleted

    # --- steps ------------------------------------------------------------------------------------
    def _evaluate(self, team: str, name: str, status: dict) -> live_gates.LiveReport:
        current = status["rollout"]
        gates = self.catalog().live_gates_for(team)
        frame = self._window(team, name, current["rollout"], gates, None)
        return live_gates.evaluate(frame, gates, reference=self._reference(team, current["requested_uri"]),
                                   candidate_version=current["model_version"])

    def _window(self, team: str, name: str, settings: dict, gates, now: datetime | None):
        catalog = self.catalog()
        until = now or datetime.now(UTC)
        since = until - timedelta(seconds=gates.window_seconds)
        if settings.get("since"):
            since = max(since, datetime.fromtimestamp(settings["since"], UTC))
        return read_window(self.s3(), catalog.storage.s3.bucket, self.log_prefix(team), name, since,
                           until + timedelta(seconds=1))

    def log_prefix(self, team: str) -> str:
        """Where the live gates read a team's inference log: the rollout gateway's evidence (evidence.py: written by
        the platform, on the local platform and on a cluster; no team can write there)."""
        return evidence_prefix(PLATFORM_PREFIX, team)

    def _store_drift(self, team: str, model: str, version: str, live: live_gates.LiveReport) -> dict | None:
        """The drift report the promotion passed, kept as artifacts of the candidate version's run (drift/);
        best effort: the promotion stands either way, and the answer says where it is or why not."""
        if live.drift is None:
            return None
        try:
            with self.promotions.mlflow.client(team) as client:
                run_id = client.get_model_version(model, version).run_id
                return {"run_id": run_id, **drift.store_report(live.drift, run_id=run_id, client=client)}
        except Exception as e:
            log.warning("the drift report of %s/%s version %s was not stored: %s", team, model, version, e)
            return {"error": f"not stored: {type(e).__name__}: {e}"[:500]}

    def _reference(self, team: str, model_uri: str):
        """The candidate's reference data, None when it has none or it cannot be read (the drift gate then waits)."""
        from mlplatform.registry.reference import load_reference_data

        key = (team, model_uri)
        if key in self._references:
            self._references.move_to_end(key)
            return self._references[key]
        try:
            with self.promotions.mlflow.client(team) as client:
                reference = load_reference_data(model_uri, client)
        except Exception as e:  # not cached: it may be logged later, or MLflow may be back
            log.info("no reference data for %s: %s", model_uri, e)
            return None
        self._references[key] = reference
        while len(self._references) > REFERENCES_KEPT:
            self._references.popitem(last=False)
        return reference

    def _remember(self, team: str, name: str, status: dict) -> None:
        """A step's commit (GitOps mode), the report's `commit` from now on."""
        if isinstance(status, dict) and status.get("commit"):
            self._commits[(team, name)] = status["commit"]

    def committed(self, team: str, kind: str, name: str, commit: dict) -> None:
        """A commit of the endpoint's file through the service's GitOps changes (a redeploy, a delete): the report's
        `commit` from now on. (A commit pushed to Git by other means is seen after the service's restart.)"""
        if kind == "serving":
            self._commits[(team, name)] = commit

    def _last_commit(self, team: str, name: str) -> dict | None:
        """The last commit of the endpoint's rollout: a step's, else (the service restarted) the last of its file in
        Git, read once; None outside GitOps mode, or when Git cannot be read now (the report still answers)."""
        key = (team, name)
        if key not in self._commits:
            try:
                self._commits[key] = self.backend.last_commit(team, name)
            except Exception as e:
                log.warning("the last commit of %s/%s was not read from Git: %s", team, name, e)
                return None
        return self._commits[key]

    def _rollout(self, team: str, name: str, status: dict | None = None) -> dict:
        status = status or self.backend.status(team, name)
        if not status.get("rollout"):
            raise ServingConflict(f"{name!r} of team {team} has no rollout; start one with a candidate version")
        return status["rollout"]

    def _check_team(self, caller: Caller, team: str, name: str, action: str, *, audited: bool = True) -> None:
        catalog = self.catalog()
        if team not in catalog.teams:
            raise NotFound(f"team {team!r} is not a team of the catalog; teams: {', '.join(catalog.teams)}")
        if caller.admin or team in caller.teams:
            return
        refused = Forbidden(f"{caller.name} may not {VERBS.get(action, action + ' the rollout of')} {name!r}: the "
                            f"endpoint belongs to team "
                            f"{team} ({caller.name}'s teams: {', '.join(caller.teams) or 'none'})")
        if audited:
            self._audit("rollout", caller.name, team, name, {"change": action, "reason": str(refused)}, "refused")
        raise refused

    def _audit(self, action: str, actor: str, team: str, name: str, details: dict, outcome: str = "succeeded") -> None:
        self.audit.append(action, actor=actor, team=team, target=f"model:{team}/{name}", outcome=outcome,
                          details={"endpoint": name, **details})


def _version(value: Any) -> str:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not (text.isdigit() and len(text) <= VERSION_DIGITS and int(text) > 0):
        raise InvalidServingRequest([("version", f"{value!r} is not a model version; allowed: a version number "
                                                 "of the endpoint's registered model, e.g. 4")])
    return str(int(text))


def _model_of(status: dict) -> str:
    return MODEL_URI.fullmatch(status["model_uri"])["name"]


def _since_now(settings: Rollout) -> Rollout:
    return Rollout(**{**settings.to_dict(), "since": round(time.time(), 3)})


def _commit(status: dict) -> dict:
    """The audit's `commit` (its sha) when the backend committed the change to Git (GitOps mode), else nothing."""
    commit = status.get("commit") if isinstance(status, dict) else None
    return {"commit": commit["sha"]} if isinstance(commit, dict) and commit.get("sha") else {}


def _shown(settings: Rollout) -> dict:
    return {k: v for k, v in settings.to_dict().items() if k not in ("since", "reason")}
