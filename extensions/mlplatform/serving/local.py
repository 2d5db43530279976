"""The local serving backend: a Ray head on this machine, Serve applications on it.

The head is started on first use (`ray start --head`, its own process group: ray_head.py) with its own
temporary directory and fixed loopback ports, and outlives the kernel that started it: a later
kernel (or another user's) finds it by the port of Serve's REST API and uses it. Nothing here calls
`ray.init`: applications are declared through Serve's REST API (`PUT /api/serve/applications/`, what
`serve deploy` does; served by Serve's controller (serve_api.py), or by Ray's dashboard when asked for), so a kernel
never becomes a Ray driver and the `ray_current_cluster` pitfalls do not arise.

That REST API takes the whole set of applications at once. The set lives on disk, one record per
application (`<root>/apps/<name>.json`, written under a file lock): a deploy writes its record and
PUTs every record, a delete removes its record and PUTs the rest. So concurrent kernels never drop
each other's applications, and after a head restart the next deploy brings every application back (the
local platform's start does it at once: `mlplatform-ray-head start` starts Serve with every record).

Files under the root (`MLPLATFORM_RAY_DIR`: the local platform's `<data dir>/ray`; else
/tmp/mlp-ray-<port>):
    head.json             pid and process group of the running head
    head.log              output of `ray start`
    auth_token            the head's Ray authentication token (mode 0600)
    apps/<name>.json      the record of an application (its name checked first: a DNS label)
    apps/<name>.secrets   credentials a replica needs (mode 0600; never in the Serve config, which
                          Serve's REST API shows to any holder of the head's token)
and under the runtime directory (the root when it is at most 25 characters long, else
/tmp/mlp-ray-<port>: unix socket paths have at most 107 characters (HAProxy's 97), of which Ray
adds up to 70 below it and Serve's HAProxy 72):
    ray/                  Ray's own temporary directory: session_*/ (logs of every Ray process, its
                          sockets). Ray makes it 0777 (for users sharing a machine); the 0700 above
                          keeps others out
    hap/                  the HAProxy ingress's config and sockets (fast ingress)
    gateway/              the rollout gateway's config, traffic map and admin socket (gateway.py)
    evidence.sock         where the gateway sends its evidence: the platform service's shipper listens
Both directories are this OS user's alone: created 0700 (by the first deploy; reading creates
nothing), and one that another user owns or that the group or others may open is refused
(BackendUnavailable), never used or repaired. A runtime directory of its own in /tmp is the head's
for its lifetime: `stop()` removes it, and one a crashed run left (this user's, no head answering or
running in it) is removed and made afresh rather than refused; another user's is still refused.

Teams: a backend answers for the team of its environment (the server's MLPLATFORM_TEAM): `names`,
`status` and `delete` see only that team's applications (another team's reads as not found), and a
deploy never replaces another team's application (names are one namespace: every endpoint is
`/<name>` on the one head). This keeps users from listing or deleting another team's applications
by mistake; it is not a wall. On the local platform every notebook server runs as the same OS user,
so any user's code can read and write these files, use the head's token and set MLPLATFORM_TEAM at
will; what separates teams there is the hub's identity and credential vending, S3's policies and
MLflow's permissions. (On Kubernetes each team's applications live in the team's namespace.)

GPUs: the hub owns the machine's GPU pool. An application with GPU replicas (ceil(gpus) × the most
replicas) is reserved in it through the hub (gpu_reservations.py: the team's quota and the pool,
checked by the hub) before its record is written; its replicas get the reserved devices as
CUDA_VISIBLE_DEVICES (shared by its replicas; Ray is told not to choose its own); the reservation is
adjusted when the application is replaced, put back as it was when a deploy fails, and released
before the record is deleted. A rollout's candidate of such an application gets devices of its own,
reserved by the platform service through the hub (`HubRolloutGpus`: the champion's type and count, the
team's quota, budget and the pool, checked by the hub) before the candidate is handed to Serve, and set
as the candidate deployment's own CUDA_VISIBLE_DEVICES (its `ray_actor_options.runtime_env`, over the
champion's); a promotion makes them the champion's (the old ones released), an abort releases them.

The warm spare (issue 13: deploy → first answer in seconds, not the ~10 CPU-seconds of a fresh replica's imports):
beside the recorded applications the head runs one spare application (`apps/_spare.json`, never an endpoint's
record: `_` is not in a DNS label; Serve name and route `spare.<hex>`, spec.spare_application), whose one replica
has imported Ray Serve, MLflow's pyfunc, scikit-learn and skops and waits without a model. A deploy of a new name
that fits it (the spare's CPUs, no GPUs — a replica's CPUs and GPUs are its actor's, which Serve cannot change in
place —, a fixed number of replicas: the first is the spare's, more start as usual) takes it over: its record's
application is the spare's Serve application with the endpoint's route
(`/<name>`), size and batching, and the model and the environment in the user_config (spec.taken_over); Serve
applies that in place — no app build task (the code version, import path + args + runtime_env, is unchanged),
no new process — and the replica loads the model in `reconfigure` (app.py): deploy() → first answer ~1.2 s, ~0.8
CPU-s (bench/deploy_steps.py; ~14-29 s and ~17 CPU-s with a new replica). The spare's record goes with the
take-over, and the deploying process starts the next spare in the background once the deployed application
is running (or failed), so the new spare's ~12 CPU-seconds of start never compete with the deploy's own; any
later apply (a deploy, a delete, the platform's start) also starts one when none is recorded and the head has
room for it (its CPU beside every application's). So an endpoint's Serve application may be named `spare.<hex>`:
the record's `application.name` is what Serve knows, the record's `name` the endpoint; a later deploy of the
same name (a new version) or a rollout keeps that Serve name and moves the model back into `args`
(spec.settled), so Serve replaces the replicas with surge as for any application. A spare never serves two
teams or two models: once taken over it is the endpoint's for good (deleted with it), and it holds no
credential before that. Alternatives weighed (see bench/deploy_steps.py): Ray's worker prestart with a
`worker_process_setup_hook` (workers are started per job and runtime_env, Serve's replicas are actors the
controller creates with each application's own runtime_env, and the build task would still take a fresh
worker: ~2.5 CPU-s) and RAY_preload_python_modules (loads Serve's controller and proxies too). Set
MLPLATFORM_RAY_WARM_SPARE=0 to run without a spare (its replica: ~340 MB RSS while idle).

Rollouts (the platform service's, rollout_backends.py): endpoints are reached through the head's rollout gateway
(gateway.py: HAProxy on `http_port`, in front of Serve's HTTP on `serve_port`). A rollout adds the candidate as a
Serve application of its own at `/<name>--candidate` (spec.serve_applications; the record keeps the candidate in
its application, as on Kubernetes), and every apply sets the gateway's traffic map from the records: an endpoint
in rollout by its rollout (mode, share, mirror rate, the sides' versions, the evidence's sample rate), the others
straight through. A change of mode, share or the evidence's sample rate changes the map, not Serve: no replica
restarts. An endpoint in shadow or canary is running once Serve runs both sides and the gateway found the
candidate healthy. The gateway records the evidence the live gates read, outside the replicas (the team's code);
on this machine the replicas run as the same OS user as everything else, so, as for teams above, it is the
platform's process doing it, not a wall between OS users.

Audit: once a deploy has been handed to Serve, or a delete done, the backend reports it to the platform
service (`platform_service.report`: `deploy`, or `redeploy` when the name had a record already; `delete`;
target `model:<team>/<name>`), which records it as the server's hub user. Best effort: the action stands
whether or not the report arrives (a warning in the server's log when it does not).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from mlplatform_core.contract import HUB_CREDENTIALS, PlatformEnvironment
from mlplatform_core.names import DNS_LABEL, MAX_DNS_LABEL
from mlplatform_core.timestamps import now

from .. import localhost
from ..gitops import GitOps
from ..platform_service import report
from .backend import last_line
from .errors import BackendUnavailable, DeploymentNotFound, InvalidServingRequest, ServingConflict, ServingError
from .gitops import committed, deploy_message
from .gpu_reservations import HubGpuReservations, HubRolloutGpus
from .ray_head import LocalRayConfig, LocalRayHead
from .gateway import GatewayError, Traffic
from .inference_log import DEFAULTS
from .rollout import LIVE_MODES, Rollout, from_config
from .spec import (
    DEPLOYMENT,
    SECRETS_FILE_VARIABLE,
    SPARE_PREFIX,
    ServingRequest,
    candidate_of,
    serve_applications,
    serve_application,
    serve_config,
    spare_application,
    taken_over,
    with_candidate,
    with_inference_log,
    with_rollout,
    without_candidate,
)

log = logging.getLogger(__name__)
# On this machine a replica reaches MLflow and its S3 artifacts with the kernel's credentials, brokered
# by the hub: the contract's HUB_CREDENTIALS variables go into the application's env, the kernel's
# tokens into the 0600 secrets file.
SECRET_ENV = ("JUPYTERHUB_API_TOKEN", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@dataclass
class LocalServing:
    """deploy / status / delete of Serve applications on the local head, for the team of
    `environment` (see "Teams" in the module docstring)."""

    config: LocalRayConfig = field(default_factory=LocalRayConfig.from_environ)
    environment: PlatformEnvironment = field(default_factory=PlatformEnvironment)

    # The hub's GPU pool (reservations for GPU replicas); default: the hub of this server's environment.
    hub: HubGpuReservations | None = None
    # The platform service's reservations of rollout candidates' GPUs in that pool (rollouts are the service's).
    rollout_gpus: HubRolloutGpus | None = None
    # The server's variables for the hub and the platform service (JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN,
    # JUPYTERHUB_SERVER_NAME, MLPLATFORM_SERVICE_URL); default: this process's environment.
    environ: Mapping[str, str] | None = None
    # GitOps mode (the catalog's `gitops`): each deploy and delete is first a commit of the RayService the
    # Kubernetes backend would apply, through the platform service; a refused commit deploys nothing.
    gitops: GitOps | None = None
    # The warm spare (module docstring); MLPLATFORM_RAY_WARM_SPARE=0 turns it off.
    warm_spare: bool = field(default_factory=lambda: os.environ.get("MLPLATFORM_RAY_WARM_SPARE", "1") != "0")

    def __post_init__(self):
        self.head = LocalRayHead(self.config)
        self.apps = self.config.directory / "apps"
        if self.hub is None:
            self.hub = HubGpuReservations.from_environ(self._environ, self.environment.user)

    @property
    def _environ(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    # --- the interface of every backend ----------------------------------------------------------
    def deploy(self, request: ServingRequest, *, model_version: str, env: Mapping[str, str],
               secrets: Mapping[str, str] | None = None, owner: Mapping[str, str] | None = None) -> dict:
        """Record the application, start the head if needed, hand every application to Serve.
        `secrets` (default: the kernel's tokens) reach the replicas in a 0600 file, never in the config.
        `owner` (default: the environment's user and team) is recorded; its team is the application's."""
        self.head.private(create=True)
        if owner is None:
            owner = {k: v for k, v in (("user", self.environment.user), ("team", self.environment.team)) if v}
        owner = dict(owner)
        if secrets is None:
            secrets = {k: os.environ[k] for k in SECRET_ENV if os.environ.get(k)}
        with localhost.locked(self.apps / ".lock"):
            previous = localhost.read_json(self._record(request.name))
            surge = self._check(request, previous, owner)
            reservation = self._reserve_gpus(request, previous)  # the hub's pool: before anything is written
            try:
                commit = self._commit(request, model_version=model_version, env=env, owner=owner, previous=previous,
                                      gpu_type=reservation["gpu_type"] if reservation else None)
            except BaseException:
                self._restore_gpus(request.name, reservation, previous)
                raise
            env = {**env, **self.environment.variables(HUB_CREDENTIALS), **_visible_devices(reservation)}
            if secrets:
                path = self._secrets_file(request.name)
                localhost.write_json(path, dict(secrets), mode=0o600)
                env[SECRETS_FILE_VARIABLE] = str(path)
            spare = None if previous or reservation or request.gpus else self._live_spare()
            app = spare and taken_over(spare["application"], request, model_version=model_version, env=env)
            if app:
                self._spare_record().unlink()
            else:
                spare = None
                app = serve_application(request, model_version=model_version, env=env, surge=surge)
                if previous:  # the Serve application keeps its name (a taken-over spare's); new args replace it
                    app["name"] = previous["application"]["name"]
            record = {"name": request.name, "request": request.to_dict(), "model_version": str(model_version),
                      "previous_version": previous["model_version"] if previous else None,
                      "application": app, "owner": owner, "phase": "submitted", "submitted_at": now(),
                      **({"gpu_reservation": reservation} if reservation else {})}
            localhost.write_json(self._record(request.name), record)
        try:
            self.head.ensure()
            with localhost.locked(self.apps / ".lock"):
                self._apply(new_spare=spare is None)
                record.update(phase="applied", applied_at=time.time())
                localhost.write_json(self._record(request.name), record)
        except BaseException as failure:
            # A spare this deploy took over is not put back (Serve may have handed it the model and the team's
            # credentials): the apply below drops it with the record and starts a new one.
            self._restore_gpus(request.name, reservation, previous)
            self._uncommit(request.name, commit, failure)
            with localhost.locked(self.apps / ".lock"):  # nothing half-done: the previous state comes back
                if previous:
                    localhost.write_json(self._record(request.name), previous)
                else:
                    self._record(request.name).unlink(missing_ok=True)
                    self._secrets_file(request.name).unlink(missing_ok=True)
                if self.head.running():
                    with contextlib.suppress(Exception):
                        self._apply()
            raise
        self._report("redeploy" if previous else "deploy", request.name, {
            "model_uri": request.model_uri, "model_version": str(model_version),
            "previous_version": previous["model_version"] if previous else None, "replicas": request.most_replicas,
            "cpus": request.cpus, "gpus": request.gpus,
            **({"gpu_type": reservation["gpu_type"]} if reservation else {})})
        if spare and self.warm_spare:
            self._replenish_later(request.name)
        status = self.status(request.name)
        return {**status, "commit": commit["commit"]} if commit else status

    def status(self, name: str) -> dict:
        record = self._own_record(name)
        result = self._describe(record)
        if not self.head.running():
            if self.head.starting():
                return {**result, "state": "starting", "message": "starting the local Ray head"}
            if record["phase"] == "submitted":
                return {**result, "state": "submitted", "message": "waiting for the local Ray head"}
            return {**result, "state": "failed",
                    "message": "the local Ray head is not running (stopped, or the machine restarted); "
                               "deploy again to start it and bring back every application"}
        applications = self._serve_status()
        wanted = serve_applications(record["application"])  # in a rollout: the champion's, the candidate's
        app = applications.get(wanted[0]["name"])
        if app is None:
            if record["phase"] == "submitted" or time.time() - record.get("applied_at", 0) < 60:
                return {**result, "state": "deploying", "message": "handing the application to Ray Serve"}
            return {**result, "state": "failed", "message": "the application is missing on the local Ray head "
                                                            "(the head restarted?); deploy again"}
        state = _serve_state(app, record, wanted[0])
        if state["state"] == "running" and not self._routed(record["application"]):
            # Serve says running before its ingress (HAProxy reloads) routes a new prefix: a taken-over spare's
            # new route, a first deploy's. Until then a request would get the ingress's 404.
            state = {**state, "state": "deploying",
                     "message": f"waiting for Ray Serve's HTTP ingress to route {record['application']['route_prefix']}"}
        if state["state"] == "running" and len(wanted) > 1:  # the endpoint runs once its candidate does too
            candidate = applications.get(wanted[1]["name"])
            side = _serve_state(candidate, record, wanted[1]) if candidate else {
                "state": "deploying", "message": "handing the candidate to Ray Serve"}
            if side["state"] == "running" and not self._routed(wanted[1]):
                side = {"state": "deploying", "message": f"waiting for Ray Serve's HTTP ingress to route "
                                                         f"{wanted[1]['route_prefix']}"}
            live = ((candidate_of(record["application"]) or {}).get("rollout") or {}).get("mode") in LIVE_MODES
            if side["state"] == "running" and live and not self._gateway_sees_candidate(name):
                side = {"state": "deploying", "message": "waiting for the rollout gateway's health check of the "
                                                         "candidate"}
            if side["state"] != "running":
                state = {**state, **side, "replicas": state["replicas"],
                         "message": f"the candidate (version {wanted[1]['args']['model_version']}): {side['message']}"}
        return {**result, **state}

    def delete(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> dict:
        self._own_record(name)  # the name and the directories checked before the lock file is made
        with localhost.locked(self.apps / ".lock"):
            record = self._own_record(name)
            removal = self._commit_removal(name)  # first: a refused commit deletes nothing
            if record.get("gpu_reservation"):  # still there, still the team's
                self._hub().release(name)  # a refused release deletes nothing
            self._record(name).unlink()
            self._secrets_file(name).unlink(missing_ok=True)
            if self.head.running():
                self._apply()
        self._report("delete", name, {"model_version": record.get("model_version")})
        if wait and self.head.running():
            serve_name = record["application"]["name"]
            localhost.wait_until(lambda: serve_name not in self._serve_status(), timeout)
        return {"name": name, "backend": "local", "state": "deleted",
                **({"commit": removal["commit"]} if removal else {})}

    # --- rollout (rollout.py): a candidate beside the champion of an application ---------------------
    def start_rollout(self, name: str, *, model_version: str, requested_uri: str, rollout: Rollout,
                      inference_log: Mapping[str, Any]) -> dict:
        """Serve `model_version` beside the application's champion, routed by `rollout`. The head must
        have room for both (the candidate is the champion's size); a champion holding GPUs of the hub's
        pool gets a candidate with devices of its own, reserved first (refused: 409 with the numbers,
        nothing changed) and given back if Serve refuses the candidate."""
        reserved = []

        def change(record: dict) -> dict:
            if candidate_of(record["application"]):
                raise ServingConflict(f"{name!r} already tries version {candidate_of(record['application'])['model_version']}"
                                      "; promote it or end that rollout first")
            self._check_room(record)
            env = {}
            if record.get("gpu_reservation"):
                user = (record.get("owner") or {}).get("user") or ""
                answer = self._rollout_gpus().reserve(self.environment.team, name, user)
                reserved.append(answer)
                record["candidate_gpu_reservation"] = {"gpu_type": answer["gpu_type"], "devices": answer["devices"]}
                env = _visible_devices(record["candidate_gpu_reservation"])
            return with_candidate(record["application"], model_version=model_version, requested_uri=requested_uri,
                                  rollout=rollout, inference_log=inference_log, env=env)

        def undo() -> None:
            if reserved:
                with contextlib.suppress(ServingError):  # Serve's refusal is the error to tell
                    self._rollout_gpus().release(self.environment.team, name)
        return self._change_application(name, change, undo)

    def set_rollout(self, name: str, rollout: Rollout) -> dict:
        """Another mode or share for the rollout of `name`: its record, and the gateway's map (no Serve change)."""
        def change(record: dict) -> dict:
            self._rollout_of(name, record)
            return with_rollout(record["application"], rollout)
        return self._change_application(name, change)

    def set_inference_log(self, name: str, inference_log: Mapping[str, Any] | None) -> dict:
        """The rollout's inference log on with these settings, or off (None): its record, and the gateway's map."""
        def change(record: dict) -> dict:
            self._rollout_of(name, record)
            return with_inference_log(record["application"], inference_log)
        return self._change_application(name, change)

    def end_rollout(self, name: str, *, promote: bool) -> dict:
        """Back to one model: the candidate's version with `promote` (the alias has moved), else the champion's.
        The candidate's GPUs then become the champion's (its old ones released), or are released: once Serve
        has the change, so no device is handed on while a replica of this application may still use it."""
        held = []

        def change(record: dict) -> dict:
            candidate = self._rollout_of(name, record)
            if record.get("candidate_gpu_reservation"):
                held.append(record.pop("candidate_gpu_reservation"))
                if promote:
                    record["gpu_reservation"] = held[0]
            if promote:
                record["previous_version"], record["model_version"] = record["model_version"], candidate["model_version"]
            return without_candidate(record["application"], promote=promote)
        status = self._change_application(name, change)
        if held:
            gpus, team = self._rollout_gpus(), self.environment.team
            try:
                if promote:
                    gpus.promote(team, name, (status.get("owner") or {}).get("user") or "")
                else:
                    gpus.release(team, name)
            except ServingError as e:  # the rollout has ended: the devices stay held (unused) until the delete
                log.warning("the candidate GPUs of %s/%s stay reserved until the endpoint is deleted: %s", team, name, e)
        return status

    def in_rollout(self) -> list[tuple[str, str]]:
        """(team, name) of every application with a candidate, whatever the team (the platform's view)."""
        if not self.apps.is_dir():
            return []
        return sorted((self._team_of(r), r["name"]) for r in self._records() if candidate_of(r["application"]))

    def _rollout_of(self, name: str, record: dict) -> dict:
        candidate = candidate_of(record["application"])
        if candidate is None:
            raise ServingConflict(f"{name!r} has no rollout; start one with a candidate version first")
        return candidate

    def _change_application(self, name: str, change, undo=None) -> dict:
        """Apply `change(record) -> application` to the recorded application and hand every application
        to Serve; the previous record comes back (and `undo()` runs) when Serve refuses. (Rollouts are the
        platform service's: it audits them, so nothing is reported from here.)"""
        self._own_record(name)
        with localhost.locked(self.apps / ".lock"):
            previous = self._own_record(name)
            record = copy.deepcopy(previous)
            record["application"] = change(record)
            record.update(phase="applied", applied_at=time.time())
            localhost.write_json(self._record(name), record)
            try:
                if not self.head.running():
                    raise BackendUnavailable("the local Ray head is not running; deploy again to start it")
                self._apply()
            except BaseException:
                localhost.write_json(self._record(name), previous)
                if self.head.running():
                    with contextlib.suppress(Exception):
                        self._apply()
                if undo:
                    undo()
                raise
        return self.status(name)

    def start_serve(self) -> None:
        """Hand every recorded application to Serve (none: an empty set), and the warm spare. After a head's
        start this starts Serve's controller and proxy (9 s of the first deploy here), brings back what was
        served before and starts a new spare (the one recorded before the restart is replaced)."""
        with localhost.locked(self.apps / ".lock"):
            self._spare_record().unlink(missing_ok=True)
            self._apply()

    # --- the warm spare (module docstring) -----------------------------------------------------------
    def _spare_record(self) -> Path:
        return self.apps / "_spare.json"

    def _live_spare(self) -> dict | None:
        """The recorded spare, if Serve runs it (starting or running, not failed) and it may be used."""
        spare = localhost.read_json(self._spare_record()) if self.warm_spare else None
        if spare is None:
            return None
        try:
            app = self._serve_status().get(spare["application"]["name"])
        except BackendUnavailable:  # no head: a deploy starts it, and a spare with it
            return None
        return spare if app and app.get("status") in ("RUNNING", "DEPLOYING") else None

    def spare(self) -> dict | None:
        """The recorded spare (`application`, `created_at`) with Serve's state of it, or None."""
        spare = localhost.read_json(self._spare_record()) if self.apps.is_dir() else None
        if spare is None:
            return None
        try:
            app = self._serve_status().get(spare["application"]["name"]) or {}
        except BackendUnavailable:
            app = {}
        replicas = ((app.get("deployments") or {}).get(DEPLOYMENT) or {}).get("replicas") or []
        return {**spare, "status": app.get("status"), "pids": [r.get("pid") for r in replicas if r.get("pid")]}

    def wait_for_spare(self, timeout: float) -> bool:
        """Whether the spare's replica runs, waiting up to `timeout` seconds while Serve starts it (False at once
        without a spare: turned off, or no room on the head; False when its start failed)."""
        def started() -> bool:
            spare = self.spare()
            return spare is None or spare["status"] in ("RUNNING", "DEPLOY_FAILED", "UNHEALTHY")
        localhost.wait_until(started, timeout, interval=0.5)
        return (self.spare() or {}).get("status") == "RUNNING"

    def _replenish_later(self, name: str) -> None:
        """Start the next spare in the background once `name` is running or failed (at most two minutes):
        its start's CPU would slow the take-over's load on a small machine."""
        import threading

        serving = LocalServing(self.config, self.environment, hub=self.hub, rollout_gpus=self.rollout_gpus,
                               environ=self.environ, gitops=self.gitops, warm_spare=self.warm_spare)

        def replenish():
            try:
                localhost.wait_until(lambda: serving.status(name)["state"] in ("running", "failed"), 120, interval=0.5)
            except ServingError:
                pass
            try:
                serving.replenish()
            except Exception:  # noqa: BLE001 — best effort: the next deploy or delete starts one
                log.warning("could not start the next warm spare", exc_info=True)

        threading.Thread(target=replenish, name="mlplatform-warm-spare", daemon=True).start()

    def replenish(self) -> None:
        """Start a spare if none is recorded and the head runs."""
        if not self.warm_spare or self._spare_record().exists() or not self.head.running():
            return
        with localhost.locked(self.apps / ".lock"):
            if not self._spare_record().exists():
                self._apply()

    def names(self) -> list[str]:
        """The team's applications."""
        self.head.private(create=False)
        return sorted(r["name"] for r in self._records() if self._team_of(r) == self.environment.team)

    @property
    def root(self) -> Path:
        return self.config.directory

    def url(self, name: str) -> str:
        return f"{self.config.http_url}/{_checked_name(name)}"

    def shutdown(self) -> None:
        """Stop the head (applications stay recorded: the next deploy brings them back)."""
        self.head.stop()

    # --- GitOps mode: Git records what the local head serves ---------------------------------------
    def _commit(self, request: ServingRequest, *, model_version: str, env: Mapping[str, str],
                owner: Mapping[str, str], previous: dict | None, gpu_type: str | None) -> dict | None:
        """Commit the RayService the Kubernetes backend would apply for this deploy (None outside GitOps mode), its
        GPUs of `gpu_type` (the type the hub's pool reserved). What Git held before is kept in the answer
        (`before`): a deploy that fails after the commit puts it back."""
        if self.gitops is None:
            return None
        from .kubernetes import KubernetesServing, KubernetesServingConfig  # the Kubernetes client: GitOps only

        catalog, team = self.environment.catalog(), owner.get("team") or self.environment.team
        config = KubernetesServingConfig.for_catalog(catalog, namespace=catalog.teams[team].namespace, team=team,
                                                     user=owner["user"], gpu_type=gpu_type or self.environment.gpu_type)
        document = KubernetesServing(config).deploy_object(
            request, model_version=model_version, env=env, owner={"user": owner["user"], "team": team},
            previous_version=previous["model_version"] if previous else "")
        before = committed(self.gitops.committed, "serving", request.name).get("object")
        answer = committed(self.gitops.commit, "serving", request.name, document,
                           message=deploy_message(request, model_version))
        return {**answer, "before": before}

    def _uncommit(self, name: str, commit: dict | None, failure: BaseException) -> None:
        """After a failed deploy, Git back to what it held (best effort: the failure is what the caller sees)."""
        if commit is None:
            return
        why = f"the local deploy of {commit['commit']['short']} failed: {type(failure).__name__}: {failure}"[:500]
        try:
            if commit["before"] is None:
                self.gitops.remove("serving", name, message=why)
            else:
                self.gitops.commit("serving", name, commit["before"], message=why)
        except Exception:
            log.warning("GitOps: could not put %s back after its failed deploy; Git holds %s", name,
                        commit["commit"]["sha"], exc_info=True)

    def _commit_removal(self, name: str) -> dict | None:
        """Commit the removal of `name`'s file (None outside GitOps mode, or when Git never had it)."""
        if self.gitops is None:
            return None
        try:
            return committed(self.gitops.remove, "serving", name, message="deleted from the notebook")
        except DeploymentNotFound:  # deployed before GitOps mode: nothing in Git to remove
            return None

    # --- helpers ---------------------------------------------------------------------------------
    def _report(self, action: str, name: str, details: dict) -> None:
        """Tell the platform service's audit log (best effort, never raises; nothing outside the platform)."""
        if self.environment.team:
            report(action, "model", name, team=self.environment.team, details=details, environ=self._environ)

    def _record(self, name: str) -> Path:
        return self.apps / f"{_checked_name(name)}.json"

    def _secrets_file(self, name: str) -> Path:
        return self.apps / f"{_checked_name(name)}.secrets"

    def _records(self) -> list[dict]:
        """Every team's records (the head serves them all)."""
        if not self.apps.exists():
            return []
        paths = sorted(p for p in self.apps.glob("*.json") if DNS_LABEL.fullmatch(p.stem))
        return [r for p in paths if (r := localhost.read_json(p))]

    @staticmethod
    def _team_of(record: dict) -> str:
        return (record.get("owner") or {}).get("team") or ""

    def _own_record(self, name: str) -> dict:
        """The record of the team's application `name`; another team's reads as missing."""
        path = self._record(name)
        self.head.private(create=False)
        record = localhost.read_json(path)
        if record is None or self._team_of(record) != self.environment.team:
            raise DeploymentNotFound(f"no serving application {name!r} on the local Ray head; "
                                     f"applications{self._of_team()}: {', '.join(self.names()) or 'none'}")
        return record

    def _of_team(self) -> str:
        return f" of team {self.environment.team}" if self.environment.team else ""

    def _check(self, request: ServingRequest, previous: dict | None, owner: dict) -> bool:
        """Refuse what cannot run; answers whether a restart may start the new replicas before
        stopping the old ones (the head has room for both)."""
        team = owner.get("team") or ""
        if previous and self._team_of(previous) != team:
            holder = f"team {self._team_of(previous)}" if self._team_of(previous) else "no team (outside the platform)"
            raise ServingConflict(f"{request.name!r} is served for {holder}; choose another name")
        others = [r for r in self._records() if r["name"] != request.name]
        # Other teams' applications count, unnamed: their names are theirs.
        taken = [r["name"] for r in others if self._team_of(r) == team]
        if len(taken) < len(others):
            taken.append(f"{len(others) - len(taken)} application(s) of other teams")
        if previous and candidate_of(previous["application"]):
            raise ServingConflict(f"{request.name!r} is trying version {candidate_of(previous['application'])['model_version']}"
                                  " beside its champion; promote it or end the rollout before deploying another version")
        surge = True
        for resource, have, per_replica in (("CPUs", self.config.cpus, lambda r: r["cpus"]),
                                            ("GPUs", self.config.gpus, lambda r: math.ceil(r["gpus"]))):
            need = per_replica(request.to_dict()) * request.most_replicas
            used = sum(per_replica(r["request"]) * _most(r["request"]) * _copies(r) for r in others)
            if need and used + need > have:
                raise ServingConflict(
                    f"{request.name!r} needs {need:g} {resource} ({request.most_replicas} replica(s)); the local "
                    f"Ray head has {have:g}, {used:g} taken by {', '.join(taken) or 'nothing'}. "
                    f"Ask for fewer {resource} per replica or fewer replicas, or delete an application")
            if previous:
                surge &= used + need + per_replica(previous["request"]) * _most(previous["request"]) <= have
        return surge

    def _check_room(self, record: dict) -> None:
        """Room on the head for a candidate of `record`'s size beside everything recorded."""
        need = record["request"]["cpus"] * _most(record["request"])
        used = sum(r["request"]["cpus"] * _most(r["request"]) * _copies(r) for r in self._records())
        if used + need > self.config.cpus:
            raise ServingConflict(f"a candidate of {record['name']!r} needs {need:g} CPUs beside its champion; the "
                                  f"local Ray head has {self.config.cpus:g}, {used:g} taken. Delete an application "
                                  "or serve with fewer CPUs per replica")

    def _hub(self) -> HubGpuReservations:
        if self.hub is None:
            raise BackendUnavailable("GPU replicas on the local platform are reserved in the hub's GPU pool, and "
                                     "this process has no hub (JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are set in "
                                     "a server the hub started): deploy or delete from a notebook server, or use "
                                     "gpus=0")
        return self.hub

    def _rollout_gpus(self) -> HubRolloutGpus:
        if self.rollout_gpus is None:
            raise BackendUnavailable("the candidate of an application with GPUs is reserved in the hub's GPU pool by "
                                     "the platform service, and this process has no hub token of the service: "
                                     "start, promote or end the rollout through mlplatform.serving.rollouts")
        return self.rollout_gpus

    def _reserve_gpus(self, request: ServingRequest, previous: dict | None) -> dict | None:
        """The hub's reservation of the application's GPUs, adjusting what the previous version held (given
        back when the new one has none); None without GPUs, or outside the platform (no team, no quota).
        Raises what the hub refuses (409 with the numbers)."""
        count = math.ceil(request.gpus) * request.most_replicas
        held = (previous or {}).get("gpu_reservation")
        if not count:
            if held:
                self._hub().release(request.name)
            return None
        if not self.environment.team:
            return None
        answer = self._hub().reserve(request.name, count, self.environment.gpu_type or (held or {}).get("gpu_type"))
        return {"gpu_type": answer["gpu_type"], "devices": answer["devices"]}

    def _restore_gpus(self, name: str, reservation: dict | None, previous: dict | None) -> None:
        """After a failed deploy: what the previous version held (or nothing), as far as the hub still allows."""
        held = (previous or {}).get("gpu_reservation")
        if self.hub is None or not (reservation or held):
            return
        with contextlib.suppress(ServingError):  # the deploy's own error is the one to tell
            if held:
                self.hub.reserve(name, len(held["devices"]), held["gpu_type"])
            else:
                self.hub.release(name)

    def _apply(self, *, new_spare: bool = True) -> None:
        """PUT every recorded application (the REST API replaces the whole set), and the warm spare when the
        head has room for its CPU beside them (`new_spare`: record a new one if there is none)."""
        records = self._records()
        apps = [app for r in records for app in serve_applications(r["application"])]
        spare = localhost.read_json(self._spare_record()) if self.warm_spare else None
        if spare is None and new_spare and self.warm_spare:
            spare = {"application": spare_application(f"{SPARE_PREFIX}{os.urandom(4).hex()}"), "created_at": now()}
            localhost.write_json(self._spare_record(), spare)
        if spare is not None:
            used = sum(r["request"]["cpus"] * _most(r["request"]) * _copies(r) for r in records)
            if used + spare["application"]["deployments"][0]["ray_actor_options"]["num_cpus"] <= self.config.cpus:
                apps.append(spare["application"])
        body = serve_config(apps, http_host="127.0.0.1", http_port=self.config.serve_port)
        r = self.head.session().put(f"{self.config.dashboard_url}/api/serve/applications/", json=body, timeout=60)
        if not r.ok:
            raise BackendUnavailable(f"Ray Serve refused the applications ({r.status_code}): {r.text[-2000:]}")
        self._route(records)

    def _route(self, records: list[dict]) -> None:
        """The gateway's traffic map as the records say: each endpoint in rollout by its rollout, the others
        straight through to Serve."""
        self.head.ensure_gateway()
        gateway = self.head.gateway()
        wanted = {r["name"]: traffic for r in records if (traffic := _traffic(r)) is not None}
        current = gateway.traffic()
        try:
            for name, traffic in wanted.items():
                if current.get(name) != traffic.entry():
                    gateway.set(name, traffic)
            for name in set(current) - set(wanted):
                gateway.clear(name)
        except GatewayError as e:
            raise BackendUnavailable(f"the local Ray head's rollout gateway did not take the traffic: {e}") from None

    def _serve_status(self) -> dict:
        url = f"{self.config.dashboard_url}/api/serve/applications/"
        try:
            r = self.head.session().get(url, timeout=30)
            r.raise_for_status()
            return r.json().get("applications") or {}
        except (requests.RequestException, ValueError) as e:
            raise BackendUnavailable(f"the local Ray head did not tell the applications' states ({url}): {e}; "
                                     f"its logs: {self.config.ray_directory / 'session_latest' / 'logs'}") from None

    def _gateway_sees_candidate(self, name: str) -> bool:
        """Whether the gateway found the candidate of `name` healthy (it sends it traffic); if it has not checked
        it yet, a request through the gateway asks it to (within 0.1 s)."""
        try:
            if self.head.gateway().candidates().get(name):
                return True
            requests.get(f"{self.url(name)}/health", timeout=10)
        except (GatewayError, requests.RequestException):
            pass
        return False

    def _routed(self, application: dict) -> bool:
        """Whether Serve's HTTP ingress routes the application's prefix to it (its `/-/routes`)."""
        try:
            r = requests.get(f"{self.config.serve_url}/-/routes", timeout=10)  # no token: the ingress, not the REST API
            return r.ok and r.json().get(application["route_prefix"]) == application["name"]
        except (requests.RequestException, ValueError, AttributeError):  # not up yet; not JSON; not an object
            return False

    def _describe(self, record: dict) -> dict:
        request = record["request"]
        url = self.url(record["name"])
        return {"name": record["name"], "backend": "local", "state": "", "message": "",
                "model_uri": request["model_uri"], "model_version": record["model_version"], "url": url,
                "predict_url": f"{url}/predict", "submitted_at": record["submitted_at"],
                "owner": record.get("owner", {}), "request": request,
                "rollout": candidate_of(record["application"]),
                "replicas": {"running": 0, "target": _most(request) if not request["max_replicas"] else None}}


def _visible_devices(reservation: dict | None) -> dict[str, str]:
    """The reserved devices for the replicas' environment. Ray would set CUDA_VISIBLE_DEVICES from its own
    pick of the head's GPUs, which knows nothing of the hub's pool: told not to, the replicas keep these."""
    if not reservation:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(reservation["devices"]), "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}


def _checked_name(name: str) -> str:
    """`name` if it is an application's name (a DNS label, full match), before it becomes a path or
    a URL: `..%2F..%2Fx` or a trailing newline never reach the file system."""
    if not (isinstance(name, str) and len(name) <= MAX_DNS_LABEL and DNS_LABEL.fullmatch(name)):
        message = (f"{name!r} is not a serving application's name; allowed: a DNS label of at most {MAX_DNS_LABEL} "
                   "lowercase letters, digits and '-', starting with a letter and ending with a letter or digit")
        raise InvalidServingRequest([("name", message)])
    return name


def _serve_state(app: dict, record: dict, wanted: dict) -> dict:
    """Serve's status of the application `wanted` (of `record`) → the platform's states (deploying, running, failed,
    deleting)."""
    status, message = app.get("status"), app.get("message") or ""
    deployment = (app.get("deployments") or {}).get(DEPLOYMENT, {})
    replicas = deployment.get("replicas") or []
    counts = {"running": sum(r.get("state") == "RUNNING" for r in replicas),
              "target": deployment.get("target_num_replicas")}
    deployed = app.get("deployed_app_config") or {}
    applied = (deployment.get("deployment_config") or {}).get("user_config")
    if status == "RUNNING" and (deployed.get("args") != wanted["args"] or
                                (applied is not None and applied != wanted["deployments"][0]["user_config"])):
        status = "DEPLOYING"  # the controller has not taken the new config yet
    state = {"RUNNING": "running", "DEPLOY_FAILED": "failed", "UNHEALTHY": "failed",
             "DELETING": "deleting"}.get(status, "deploying")
    if state == "failed":
        detail = deployment.get("message") or message
        message = last_line(detail)
        if counts["running"] and record.get("previous_version"):
            message += f" (version {record['previous_version']} keeps answering)"
        return {"state": state, "message": message, "detail": detail[-4000:], "replicas": counts}
    return {"state": state, "message": last_line(deployment.get("message") or message) if state != "running" else "",
            "replicas": counts}


def _traffic(record: dict) -> Traffic | None:
    """The gateway's traffic of a record in rollout (None: not in rollout)."""
    candidate = candidate_of(record["application"])
    if candidate is None:
        return None
    log = candidate.get("inference_log")
    return Traffic(team=LocalServing._team_of(record), champion_version=str(record["model_version"]),
                   candidate_version=str(candidate["model_version"]),
                   rollout=from_config(candidate.get("rollout")) or Rollout(mode="off"),
                   sample_rate=float({**DEFAULTS, **log}["sample_rate"]) if log is not None else 0.0)


def _copies(record: dict) -> int:
    """Sets of replicas an application runs: two while a candidate is beside its champion."""
    return 2 if candidate_of(record["application"]) else 1


def _most(request: dict) -> int:
    return request["max_replicas"] if request.get("max_replicas") is not None else request["replicas"]

