"""The Kubernetes serving backend: one KubeRay `RayService` per application in the team's namespace.

deploy() creates the RayService (spec.ray_service) or, for an existing one, patches only what
changed: a new model version changes `serveConfigV2`, which KubeRay applies in place (Serve starts
the new replicas before stopping the old ones); new pod sizes change `rayClusterConfig`, for which
KubeRay starts a new cluster and moves traffic once it serves (zero downtime either way).

status() reads the RayService's status as KubeRay writes it: `conditions` (Ready,
UpgradeInProgress), `observedGeneration`, and Serve's application status in
`activeServiceStatus` / `pendingServiceStatus` (NOT_STARTED, DEPLOYING, RUNNING, DEPLOY_FAILED,
UNHEALTHY, DELETING). Warning events of the RayService and its cluster (a quota refusal of a worker
pod, say) become the message while it is not running.

Endpoint: the team's rollout gateway (`mlplatform-gateway-<team>` in the hub's namespace, port 8000), route
`/<name>`, in front of KubeRay's serve service `<name>-serve-svc` (port 8000), which it finds by DNS.

GitOps mode (the catalog's `gitops`; mlplatform/gitops.py): deploy() sends the same RayService to the platform
service, which commits it to the team's file; delete() has the file removed. Argo CD applies the change; until
the cluster holds the committed object (its deploy id), status() says the commit is waiting for Argo CD to sync,
and then follows KubeRay's status as above. A rollout's changes (start_rollout, set_rollout, end_rollout) patch
the RayService in direct mode; in GitOps mode the platform service commits the very same change to the team's file
instead (`rollout_patch` applied to the object Git holds: mlplatform_service/rollout_backends.py).

Rollout: the candidate is a Serve application of its own (`<name>--candidate`, spec.serve_applications) beside the
champion's, which a rollout never changes; the team's gateway splits and mirrors between the two by the platform
service's traffic map (mlplatform_service/traffic_maps.py). The RayService records the rollout in its `application`
annotation (the champion with its candidate and the settings), which status() reports; the service's map is what
routes. A deploy during a rollout is refused, as on the local platform: promote or end it first.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mlplatform_core import images
from mlplatform_core.catalog import CatalogError
from mlplatform_core import mlflow_token
from mlplatform_core.contract import PlatformEnvironment
from mlplatform_core.names import (
    CLUSTER_DOMAIN,
    COMPONENT_LABEL,
    GPU_TYPE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MAX_SERVING_NAME,
    SERVE_PORT,
    SERVING_COMPONENT,
    TEAM_LABEL,
    USER_LABEL,
    annotation_key,
    gateway_host,
    label_value,
    service_host,
)
from mlplatform_core.timestamps import now

from .. import kube
from ..gitops import GitOps, waiting_message
from ..localhost import wait_until
from .backend import DELETING, DEPLOYING, FAILED, RUNNING, STARTING, SUBMITTED, last_line
from .errors import BackendUnavailable, DeploymentNotFound, InvalidServingRequest, ServingConflict, ServingError
from .gitops import committed as _committed, deploy_message
from .rollout import Rollout
from .spec import (CANDIDATE_SUFFIX, ServingRequest, candidate_of, ray_service, serve_applications, with_candidate,
                   with_inference_log, with_rollout, without_candidate)

# Workers of the group at most, per replica of the application (spec.ray_service): its replicas and a surge
# of new ones while a version rolls out; with a candidate, twice that.
SURGE_ROOM, ROLLOUT_ROOM = 2, 4
MANAGED = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={SERVING_COMPONENT}"


@dataclass(frozen=True)
class KubernetesServingConfig:
    """Where and how applications run: from the environment contract and the platform catalog."""

    namespace: str
    team: str
    user: str
    image: str = images.SERVING
    gpu_image: str = images.SERVING_GPU
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[str, ...] = ()  # JSON of each toleration (hashable)
    service_account: str | None = None
    gpu_type: str | None = None  # the catalog's name of the GPU type replicas with GPUs get
    team_gpu_types: tuple[str, ...] = ()  # the GPU types of the team's quota (for the refusal's message)
    # MLflow checks tokens (catalog `mlflow.access.mode: hub-tokens`) and knows the cluster's service-account
    # issuer: replicas get a token projected for MLflow (mlplatform_core/mlflow_token.py).
    mlflow_token: bool = False
    # The team's rollout gateway (host:port, hub_config/render/gateway.py), where callers reach its endpoints;
    # None without a catalog: KubeRay's serve Service of each endpoint.
    gateway: str | None = None
    cluster_domain: str = CLUSTER_DOMAIN

    @classmethod
    def for_environment(cls, environment: PlatformEnvironment) -> KubernetesServingConfig:
        """Namespace, team and user from the environment contract; images and the GPU type from its
        catalog (GPU type: the notebook's, else the team's only one; none when the notebook has no GPU
        and the team several: then deploy() refuses GPU replicas, see `gpu_type_problem`)."""
        missing = environment.missing(("namespace", "team", "user"))
        if missing:
            raise BackendUnavailable(f"{', '.join(missing)} not set: serving on Kubernetes needs the team's namespace "
                                     "from the environment contract (a server started by the platform's hub)")
        config = cls(namespace=environment.namespace, team=environment.team, user=environment.user)
        if not environment.catalog_path:
            return config
        try:
            catalog = environment.catalog()
        except CatalogError as e:
            raise BackendUnavailable(f"cannot read the platform catalog: {e}") from None
        return cls.for_catalog(catalog, namespace=config.namespace, team=config.team, user=config.user,
                               gpu_type=environment.gpu_type)

    @classmethod
    def for_catalog(cls, catalog, *, namespace: str, team: str, user: str,
                    gpu_type: str | None = None) -> KubernetesServingConfig:
        """The settings of `team`'s applications from the catalog (GPU type: `gpu_type`, else the team's only
        one). Pure: the GitOps and Backstage renderers make the same RayService as deploy() with it."""
        gpu_name = gpu_type
        team_spec = catalog.teams.get(team)
        team_types = tuple(t for t, n in team_spec.gpu_quota.per_type.items() if n and t in catalog.gpu_types) \
            if team_spec is not None else ()
        if gpu_name is None and len(team_types) == 1:
            gpu_name = team_types[0]
        gpu = catalog.gpu_types.get(gpu_name) if gpu_name else None
        return cls(namespace=namespace, team=team, user=user, team_gpu_types=team_types,
                   image=catalog.kubernetes.images.serving, gpu_image=catalog.kubernetes.images.serving_gpu,
                   service_account=catalog.kubernetes.serving_service_account, gpu_type=gpu_name if gpu else None,
                   gpu_resource=gpu.resource if gpu else "nvidia.com/gpu",
                   node_selector=tuple(sorted(gpu.node_selector.items())) if gpu else (),
                   tolerations=tuple(json.dumps(t.model_dump(exclude_none=True)) for t in gpu.tolerations)
                   if gpu else (),
                   mlflow_token=mlflow_token.enabled(catalog),
                   gateway=gateway_host(team, catalog.kubernetes.hub_namespace, catalog.kubernetes.cluster_domain),
                   cluster_domain=catalog.kubernetes.cluster_domain)


class KubernetesServing:
    """deploy / status / delete / names / url of RayServices in the team's namespace."""

    backend = "kubernetes"

    def __init__(self, config: KubernetesServingConfig, api_client=None, gitops: GitOps | None = None):
        self.config = config
        self._client = api_client
        self.gitops = gitops  # GitOps mode: changes are commits (mlplatform/gitops.py)

    @property
    def services(self) -> kube.CustomObjects:
        return kube.CustomObjects(self._api(), kube.RAY_SERVICES, self.config.namespace)

    def _api(self):
        if self._client is None:  # once per backend: the API server's client keeps its connections
            self._client = _translated(kube.connect)
        return self._client

    # --- the interface of every backend ----------------------------------------------------------
    def deploy(self, request: ServingRequest, *, model_version: str, env: Mapping[str, str],
               secrets: Mapping[str, str] | None = None, owner: Mapping[str, str] | None = None) -> dict:
        """Create the RayService, or patch what changed. `secrets` are not used: the pods get their
        identity from their service account, never from the notebook."""
        if len(request.name) > MAX_SERVING_NAME:
            why = (f"{request.name!r} has {len(request.name)} characters; allowed on Kubernetes: at most "
                   f"{MAX_SERVING_NAME} (KubeRay adds suffixes)")
            raise InvalidServingRequest([("name", why)])
        c = self.config
        if request.gpus and not c.gpu_type:
            raise InvalidServingRequest([("gpus", gpu_type_problem(request.gpus, c))])
        owner = {"user": c.user, "team": c.team, **(owner or {})}
        services = self.services
        current = _translated(services.get, request.name)
        body = self.deploy_object(request, model_version=model_version, env=env, owner=owner,
                                  previous_version=kube.annotation(current, "model-version") if current else "")
        if current is not None:
            self._check_owner(current, owner)
            trying = candidate_of(recorded_application(current))
            if trying:
                raise ServingConflict(f"{request.name!r} is trying version {trying['model_version']} beside its "
                                      "champion; promote it or end the rollout before deploying another version")
        if self.gitops is not None:
            answer = _committed(self.gitops.commit, "serving", request.name, body,
                                message=deploy_message(request, model_version))
            keeps = f" (version {kube.annotation(current, 'model-version')} keeps answering)" if current else ""
            return {**self._describe(body), "message": waiting_message(answer, keeps=keeps), "commit": answer["commit"]}
        if current is None:
            return self._describe(self._create(services, body))
        return self._describe(_translated(services.patch, request.name, _changes(current, body)))

    def manifest(self, request: ServingRequest, *, model_version: str, env: Mapping[str, str],
                 owner: Mapping[str, str]) -> dict:
        """The RayService deploy() applies for `request`, before its annotations of this deploy (who, when, the
        request, the previous version): pure, so GitOps commits and Backstage skeletons are the same object."""
        c = self.config
        return ray_service(request, namespace=c.namespace, model_version=model_version, env=env,
                           image=c.gpu_image if request.gpus else c.image, gpu_resource=c.gpu_resource,
                           node_selector=dict(c.node_selector), tolerations=[json.loads(t) for t in c.tolerations],
                           service_account=c.service_account, mlflow_token=c.mlflow_token,
                           labels={TEAM_LABEL: label_value(owner["team"]),
                                   USER_LABEL: label_value(owner["user"]),
                                   **({GPU_TYPE_LABEL: c.gpu_type} if request.gpus else {})})

    def deploy_object(self, request: ServingRequest, *, model_version: str, env: Mapping[str, str],
                      owner: Mapping[str, str], previous_version: str = "") -> dict:
        """The RayService deploy() applies or commits: the manifest with this deploy's annotations (the request,
        who, when, a fresh deploy id, the version it replaces)."""
        body = self.manifest(request, model_version=model_version, env=env, owner=owner)
        body["metadata"]["annotations"].update({
            annotation_key("request"): json.dumps(request.to_dict(), sort_keys=True),
            annotation_key("user"): owner["user"],
            annotation_key("submitted-at"): now(),
            annotation_key("deploy-id"): uuid.uuid4().hex,
            annotation_key("previous-version"): previous_version,
            annotation_key("application"): "",  # no rollout (rollout_patch)
        })
        return body

    def status(self, name: str) -> dict:
        found = _translated(self.services.get, name)
        if found is not None and not _serving(found):
            found = None
        if self.gitops is not None:
            return self._gitops_status(name, found)
        if found is None:
            raise DeploymentNotFound(f"no serving application {name!r} in namespace {self.config.namespace}; "
                                     f"applications: {', '.join(self.names()) or 'none'}")
        return self._describe(found, events=True)

    def _gitops_status(self, name: str, found: dict | None) -> dict:
        """The cluster's object once it is the committed one; before, the commit waiting for Argo CD."""
        record = _committed(self.gitops.committed, "serving", name)
        committed, commit = record.get("object"), record.get("commit")
        if committed is None and found is None:
            raise DeploymentNotFound(f"no serving application {name!r} in namespace {self.config.namespace} nor "
                                     f"in Git ({record.get('path')}); applications: {', '.join(self.names()) or 'none'}")
        if committed is None:
            if commit is None:  # in the cluster, never in Git: made before GitOps mode, or by hand
                return self._describe(found, events=True)
            return {**self._describe(found), "state": DELETING, "commit": commit,
                    "message": f"removed from Git in {commit['short']}: waiting for Argo CD to prune it"}
        if found is None or kube.annotation(found, "deploy-id") != kube.annotation(committed, "deploy-id"):
            keeps = f" (version {kube.annotation(found, 'model-version')} keeps answering)" if found else ""
            return {**self._describe(committed), "commit": commit, "message": waiting_message(record, keeps=keeps)}
        return {**self._describe(found, events=True), "commit": commit}

    def delete(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> dict:
        services = self.services
        found = _translated(services.get, name)
        if self.gitops is not None:
            answer = _committed(self.gitops.remove, "serving", name, message="deleted from the notebook")
            commit = answer["commit"]
            if wait and not wait_until(lambda: _translated(services.get, name) is None, timeout):
                return {"name": name, "backend": self.backend, "state": DELETING, "commit": commit,
                        "message": f"removed from Git in {commit['short']}: waiting for {answer['waiting_for']}"}
            return {"name": name, "backend": self.backend, "state": "deleted" if wait else DELETING, "commit": commit,
                    "message": f"removed from Git in {commit['short']}"}
        if found is None or not _serving(found):
            raise DeploymentNotFound(f"no serving application {name!r} in namespace {self.config.namespace}; "
                                     f"applications: {', '.join(self.names()) or 'none'}")
        _translated(services.delete, name)
        if wait and not wait_until(lambda: _translated(services.get, name) is None, timeout):
            return {"name": name, "backend": self.backend, "state": DELETING,
                    "message": f"still being deleted after {timeout:g} s (KubeRay stops its Ray cluster)"}
        return {"name": name, "backend": self.backend, "state": "deleted"}

    def names(self) -> list[str]:
        return sorted(s["metadata"]["name"] for s in _translated(self.services.list, MANAGED))

    def url(self, name: str) -> str:
        """Where callers reach `name`: through the team's rollout gateway (which finds the endpoint's serve Service
        by DNS), else at that Service."""
        if self.config.gateway:
            return f"http://{self.config.gateway}/{name}"
        return f"http://{service_host(f'{name}-serve-svc', self.config.namespace, self.config.cluster_domain)}:" \
               f"{SERVE_PORT}/{name}"

    # --- rollout (rollout.py): a candidate beside the champion, in the same RayService -------------
    # The platform service calls these (mlplatform_service/kubernetes_rollouts.py), and routes the traffic in the
    # team's gateway; the RayService records the rollout (the `application` annotation) and runs both sides.
    def start_rollout(self, name: str, *, model_version: str, requested_uri: str, rollout: Rollout,
                      inference_log: Mapping[str, Any]) -> dict:
        """The candidate as a Serve application of its own, `<name>--candidate` (serveConfigV2, in place: the
        champion's application is unchanged) and room for its workers: the worker group's maxReplicas doubles
        (the autoscaler starts them; the admission webhook charges their GPUs). The cluster's hash leaves replica
        counts out, so KubeRay keeps the cluster."""
        return self.change_application(name, start_change(name, model_version=model_version,
                                                          requested_uri=requested_uri, rollout=rollout,
                                                          inference_log=inference_log))

    def set_rollout(self, name: str, rollout: Rollout) -> dict:
        """Another mode or share, recorded in the annotation (the gateway routes by it; no Serve application
        changes)."""
        return self.change_application(name, set_change(name, rollout))

    def set_inference_log(self, name: str, inference_log: Mapping[str, Any] | None) -> dict:
        """The rollout's inference log on with these settings, or off (None), recorded in the annotation."""
        return self.change_application(name, log_change(name, inference_log))

    def end_rollout(self, name: str, *, promote: bool) -> dict:
        """One model again: the candidate's version with `promote` (the alias has moved), else the champion's."""
        return self.change_application(name, end_change(name, promote=promote))

    def in_rollout(self) -> list[str]:
        """The namespace's applications with a candidate."""
        return sorted(s["metadata"]["name"] for s in _translated(self.services.list, MANAGED)
                      if candidate_of(recorded_application(s)))

    def change_application(self, name: str, change: RolloutChange) -> dict:
        """`change` (start_change, set_change, log_change, end_change) as a JSON patch of the cluster's RayService;
        its resourceVersion makes the patch fail (409) when the RayService changed since it was read."""
        services = self.services
        found = _translated(services.get, name)
        if found is None or not _serving(found):
            raise DeploymentNotFound(f"no serving application {name!r} in namespace {self.config.namespace}; "
                                     f"applications: {', '.join(self.names()) or 'none'}")
        ops = [{"op": "replace", "path": "/metadata/resourceVersion", "value": found["metadata"]["resourceVersion"]},
               *rollout_patch(found, change)]
        return self._describe(_translated(services.patch, name, ops))

    def describe(self, service: dict) -> dict:
        """What status() answers for `service` (a RayService read or about to be committed), without its events."""
        return self._describe(service)

    # --- helpers ---------------------------------------------------------------------------------
    def _create(self, services: kube.CustomObjects, body: dict) -> dict:
        """Create; a failure leaves nothing behind (what this call made is known by its deploy id)."""
        try:
            return kube.create_or_clean_up(services, body, marker="deploy-id")
        except kube.KubeError as error:
            raise _serving_error(error) from None

    def _check_owner(self, current: dict, owner: Mapping[str, str]) -> None:
        name, labels = current["metadata"]["name"], current["metadata"].get("labels") or {}
        if not _serving(current):
            raise ServingConflict(f"a RayService {name!r} not made by mlplatform exists in namespace "
                                  f"{self.config.namespace}; choose another name")
        team = labels.get(TEAM_LABEL)
        if team and team != label_value(owner["team"]):
            raise ServingConflict(f"{name!r} is served for team {team}; choose another name")

    def _describe(self, service: dict, events: bool = False) -> dict:
        meta = service["metadata"]
        name = meta["name"]
        request = json.loads(kube.annotation(service, "request") or "{}")
        url = self.url(name)
        state, message, detail = _state(service)
        if events and state in (SUBMITTED, STARTING, DEPLOYING):
            warnings = _translated(kube.Pods(self._api(), self.config.namespace).warnings, name)
            if warnings:
                last = warnings[-1]
                message = f"{message}; {last['object']}: {last['reason']}: {last['message']}"
        active = ((service.get("status") or {}).get("activeServiceStatus") or {}).get("rayClusterStatus") or {}
        result = {
            "name": name, "backend": self.backend, "namespace": meta.get("namespace"), "state": state,
            "message": message, "model_uri": kube.annotation(service, "model-uri"),
            "model_version": kube.annotation(service, "model-version"), "url": url, "predict_url": f"{url}/predict",
            "submitted_at": kube.annotation(service, "submitted-at") or meta.get("creationTimestamp"),
            "owner": {"user": kube.annotation(service, "user"), "team": (meta.get("labels") or {}).get(TEAM_LABEL)},
            "request": request, "rollout": candidate_of(recorded_application(service)),
            "replicas": {"running": active.get("readyWorkerReplicas", 0),
                         "target": None if request.get("max_replicas") else request.get("replicas")},
        }
        if detail:
            result["detail"] = detail
        return result


def gpu_type_problem(gpus: float, config: KubernetesServingConfig) -> str:
    """Why GPU replicas cannot be deployed without a GPU type, and what to do.

    GPU replicas always carry their type (the label the hub's quota cache counts per type, and the
    type's node selector): a GPU of no type would slip past the team's per-type quota. The type is the
    notebook server's own (its GPU profile); without one, the team's only type. A server without
    GPUs of a team with several types has to choose by starting a server of the type to serve on:
    deploy() takes no GPU type of its own, so the type of a server's deployments is the one the hub
    checked against the quota when it started the server."""
    types = config.team_gpu_types
    if len(types) > 1:
        return (f"{gpus:g} GPU(s) per replica need a GPU type: this server has no GPU and team {config.team} has "
                f"several ({', '.join(types)}); deploy from a server started with a GPU profile of the type to "
                "serve on (its replicas get that type), or deploy with gpus=0")
    return (f"{gpus:g} GPU(s) per replica need a GPU type, and none is known for team {config.team} (the platform "
            f"catalog gives it no per-type GPU quota: teams.{config.team}.gpu_quota.per_type); deploy with gpus=0, "
            "or ask the platform team for a GPU quota")


# --- what a rollout changes in a RayService (pure: the patch path above and the GitOps commit path share it) ---
# A change: (the RayService, its Serve application) -> (the new application, the worker group's room per replica,
# annotations to set). It raises ServingConflict when the RayService is not in the state it needs.
RolloutChange = Callable[[dict, dict], tuple[dict, int, dict]]


def start_change(name: str, *, model_version: str, requested_uri: str, rollout: Rollout,
                 inference_log: Mapping[str, Any]) -> RolloutChange:
    """A candidate `model_version` beside the champion, routed by `rollout`; room for its workers."""
    def change(service: dict, app: dict) -> tuple[dict, int, dict]:
        if candidate_of(app):
            raise ServingConflict(f"{name!r} already tries version {candidate_of(app)['model_version']}; "
                                  "promote it or end that rollout first")
        return with_candidate(app, model_version=model_version, requested_uri=requested_uri, rollout=rollout,
                              inference_log=inference_log), ROLLOUT_ROOM, {}
    return change


def set_change(name: str, rollout: Rollout) -> RolloutChange:
    """Other rollout settings (mode, share): the recorded application's (the gateway's; Serve's stay)."""
    def change(service: dict, app: dict) -> tuple[dict, int, dict]:
        _rollout_of(name, app)
        return with_rollout(app, rollout), ROLLOUT_ROOM, {}
    return change


def log_change(name: str, inference_log: Mapping[str, Any] | None) -> RolloutChange:
    """Other inference-log settings (None: off): the recorded application's (the gateway's; Serve's stay)."""
    def change(service: dict, app: dict) -> tuple[dict, int, dict]:
        _rollout_of(name, app)
        return with_inference_log(app, inference_log), ROLLOUT_ROOM, {}
    return change


def end_change(name: str, *, promote: bool) -> RolloutChange:
    """One model again: the candidate's version with `promote` (recorded in the annotations), else the champion's."""
    def change(service: dict, app: dict) -> tuple[dict, int, dict]:
        candidate = _rollout_of(name, app)
        annotations = {annotation_key("model-version"): candidate["model_version"],
                       annotation_key("previous-version"): kube.annotation(service, "model-version")} \
            if promote else {}
        return without_candidate(app, promote=promote), SURGE_ROOM, annotations
    return change


def rollout_patch(service: dict, change: RolloutChange) -> list[dict]:
    """What `change` does to `service`, as JSON-patch `add` operations relative to it: serveConfigV2 (in a rollout
    the champion's application and the candidate's, spec.serve_applications), the worker group's maxReplicas
    (room × the request's most replicas) and the annotations, among them the recorded application (its candidate
    and the rollout's settings, which are the gateway's and in no Serve application). Pure: the direct path sends
    them to the API server, GitOps mode applies them to the RayService Git holds (`patched`) and commits that."""
    app, room, annotations = change(service, recorded_application(service))
    request = json.loads(kube.annotation(service, "request") or "{}")
    ops = [{"op": "add", "path": "/spec/serveConfigV2",
            "value": yaml.safe_dump({"applications": serve_applications(app)}, sort_keys=False)}]
    if request:
        ops.append({"op": "add", "path": "/spec/rayClusterConfig/workerGroupSpecs/0/maxReplicas",
                    "value": room * _most(request)})
    recorded = json.dumps(app) if candidate_of(app) else ""  # its keys' order kept: the same serveConfigV2 after
    ops.append({"op": "add", "path": "/metadata/annotations",
                "value": {**(service["metadata"].get("annotations") or {}), **annotations,
                          annotation_key("application"): recorded}})
    return ops


def patched(document: dict, ops: list[dict]) -> dict:
    """A copy of `document` with JSON-patch `add` operations (RFC 6902) applied, as the API server applies them."""
    result = copy.deepcopy(document)
    for op in ops:
        if op.get("op") != "add":
            raise ValueError(f"{op.get('op')!r} is not an operation patched() applies; allowed: add")
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        value = copy.deepcopy(op["value"])
        if isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), value)
        else:
            target[last] = value
    return result


def _state(service: dict) -> tuple[str, str, str]:
    """KubeRay's status → (state, message, detail)."""
    meta, status = service["metadata"], service.get("status") or {}
    name, previous = meta["name"], kube.annotation(service, "previous-version")
    if meta.get("deletionTimestamp"):
        return DELETING, "being deleted", ""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if not status or ("observedGeneration" not in status and not conditions):
        return SUBMITTED, "waiting for the KubeRay operator to take the RayService", ""
    ready, upgrading = conditions.get("Ready") or {}, conditions.get("UpgradeInProgress") or {}
    serving = ready.get("status") == "True"
    if ready.get("status") == "False" and ready.get("reason") == "InitializingTimeout":
        return FAILED, last_line(ready.get("message")) or "the Ray cluster did not start in time", \
            ready.get("message", "")
    active = status.get("activeServiceStatus") or {}
    pending = status.get("pendingServiceStatus") or {}
    app = (active.get("applicationStatuses") or {}).get(name)
    new_app = (pending.get("applicationStatuses") or {}).get(name)
    keeps = f" (version {previous} keeps answering)" if previous and serving else ""
    if upgrading.get("status") == "True":
        if new_app and new_app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
            detail = _app_detail(new_app)
            return FAILED, last_line(detail) + keeps, detail
        return DEPLOYING, f"a new Ray cluster is starting for the new version{keeps}", ""
    if status.get("observedGeneration", meta.get("generation")) < meta.get("generation", 0):
        return DEPLOYING, f"KubeRay has not taken the new version yet{keeps}", ""
    if app is None:  # a first deploy: KubeRay starts the cluster as the pending one
        if new_app is None:
            return STARTING, "the Ray cluster is starting", ""
        app = new_app
    app_status = app.get("status")
    if app_status in ("DEPLOY_FAILED", "UNHEALTHY"):
        detail = _app_detail(app)
        return FAILED, last_line(detail) + keeps, detail
    if app_status == "DELETING":
        return DELETING, "Ray Serve is removing the application", ""
    if app_status == "RUNNING" and serving:
        return _candidate_state(service, active)
    if app_status == "RUNNING":
        return DEPLOYING, f"waiting for the serve endpoints ({ready.get('reason') or 'not ready'})", ""
    return DEPLOYING, last_line(_app_detail(app)) or "Ray Serve is starting the replicas", ""


def _candidate_state(service: dict, active: dict) -> tuple[str, str, str]:
    """A running endpoint's state with its rollout's candidate: running once the candidate's application runs too."""
    candidate = candidate_of(recorded_application(service))
    if candidate is None:
        return RUNNING, "", ""
    app = (active.get("applicationStatuses") or {}).get(f"{service['metadata']['name']}{CANDIDATE_SUFFIX}")
    side = f"the candidate (version {candidate['model_version']})"
    if app is None:
        return DEPLOYING, f"{side}: waiting for Ray Serve to start it", ""
    if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
        detail = _app_detail(app)
        return FAILED, f"{side}: {last_line(detail)}", detail
    if app.get("status") != "RUNNING":
        return DEPLOYING, f"{side}: {last_line(_app_detail(app)) or 'Ray Serve is starting the replicas'}", ""
    return RUNNING, "", ""


def _changes(current: dict, body: dict) -> list[dict]:
    """A JSON patch from `current` to `body`: the spec's changed parts (serveConfigV2 alone for a
    new model version), labels and annotations; the resourceVersion makes it fail (409) when the
    RayService changed meanwhile, instead of overwriting that change."""
    ops = [{"op": "replace", "path": "/metadata/resourceVersion", "value": current["metadata"]["resourceVersion"]}]
    for key in ("labels", "annotations"):
        ops.append({"op": "add", "path": f"/metadata/{key}",
                    "value": {**(current["metadata"].get(key) or {}), **body["metadata"][key]}})
    spec = current.get("spec") or {}
    for key, value in body["spec"].items():
        if spec.get(key) != value:
            ops.append({"op": "add", "path": f"/spec/{key}", "value": value})
    ops += [{"op": "remove", "path": f"/spec/{key}"} for key in spec if key not in body["spec"]]
    return ops


def recorded_application(service: dict) -> dict:
    """The recorded application of a RayService: in a rollout its annotation (the champion with its candidate and
    the rollout's settings, spec.with_candidate), else the one Serve application of its serveConfigV2."""
    recorded = kube.annotation(service, "application")
    if recorded:
        return json.loads(recorded)
    config = yaml.safe_load((service.get("spec") or {}).get("serveConfigV2") or "") or {}
    return (config.get("applications") or [{}])[0]


def _rollout_of(name: str, app: dict) -> dict:
    candidate = candidate_of(app)
    if candidate is None:
        raise ServingConflict(f"{name!r} has no rollout; start one with a candidate version first")
    return candidate


def _most(request: dict) -> int:
    return request["max_replicas"] if request.get("max_replicas") is not None else request.get("replicas", 1)


def _app_detail(app: dict) -> str:
    messages = [d.get("message") for d in (app.get("serveDeploymentStatuses") or {}).values() if d.get("message")]
    return "\n".join(messages) or app.get("message") or ""


def _serving(obj: dict) -> bool:
    return kube.managed(obj, **{COMPONENT_LABEL: SERVING_COMPONENT})


def _serving_error(error: kube.KubeError) -> ServingError:
    """The API's refusal as the serving API's error, with a status the REST API can answer."""
    if error.status is None or error.status >= 500:
        return BackendUnavailable(str(error))
    if error.status == 409:
        return ServingConflict(str(error))
    if error.status == 404:
        return DeploymentNotFound(str(error))
    refused = ServingError(str(error))
    refused.status_code = error.status  # 403 (RBAC or quota), 422 (the RayService is invalid), ...
    return refused


_translated = kube.translating(_serving_error)
