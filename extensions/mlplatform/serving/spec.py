"""What to serve, validated, and the manifests made from it. Pure functions: plain values in, plain
dicts out, no I/O.

    request = serving_request(name="iris", model_uri="models:/iris@champion", replicas=2)
    app = serve_application(request, model_version="3", env=environment.variables(FORWARDED_TO_SERVING))
    serve_config([app], http_port=18602)                         # the local backend PUTs this
    ray_service(request, namespace="team-vision", model_version="3", env=...)   # ray.io/v1, Kubernetes
    taken_over(spare_application("spare.0a1b2c3d"), request, model_version="3", env=...)  # the local warm spare

`serving_request` checks every input and raises `InvalidServingRequest` listing each problem with
the field, the value and what is allowed.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import yaml
from mlplatform_core import images
from mlplatform_core.catalog import ServingLimits
from mlplatform_core.names import (
    COMPONENT_LABEL,
    DNS_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MAX_DNS_LABEL,
    SERVING_COMPONENT,
    annotation_key,
)
from mlplatform_core.mlflow_token import MOUNT as MLFLOW_TOKEN_MOUNT
from mlplatform_core.mlflow_token import VOLUME as MLFLOW_TOKEN_VOLUME
from mlplatform_core.mlflow_token import environment as mlflow_token_environment
from mlplatform_core.quantities import cpu_quantity

from .errors import InvalidServingRequest
from .rollout import Rollout

IMPORT_PATH = "mlplatform.serving.app:build"
DEPLOYMENT = "Model"  # the deployment's name inside every application (app.py)
CANDIDATE_DEPLOYMENT = "Candidate"  # beside it during a rollout (rollout.py)
# The route of an endpoint's candidate as an application of its own (behind the rollout gateway, gateway.py):
# `/<name>--candidate`. No endpoint's name may end with it.
CANDIDATE_SUFFIX = "--candidate"
# Where a replica finds the credentials it may need (a 0600 file; never in the Serve config, which Serve's
# REST API shows): the local backend writes it, app.py reads it.
SECRETS_FILE_VARIABLE = "MLPLATFORM_SERVING_SECRETS_FILE"
RAY_VERSION = "2.60.0"
DEFAULT_IMAGE = images.SERVING
DEFAULT_GPU_IMAGE = images.SERVING_GPU
TASKS = ("predict", "text-generation")
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))$")
MAX_BATCH_SIZE = 1024

# The environment contract (README) as a served model sees it: where MLflow and S3 are, whose it
# is. Never the notebook's credentials, its GPUs or its AWS config (pods get their own identity).

@dataclass(frozen=True)
class ServingRequest:
    """A validated request. `replicas` is fixed unless `min_replicas`/`max_replicas` (autoscaling)."""

    name: str
    model_uri: str
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    cpus: float = 1.0
    gpus: float = 0
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.002
    max_ongoing_requests: int | None = None  # unset: 2 × max_batch_size, at least 64
    task: str | None = None  # unset: from the model's metadata (app.py)
    max_tokens_limit: int = 4096
    # Autoscaling: replicas without traffic for this long go, down to min_replicas (the catalog's
    # serving.idle_downscale_seconds, not the user's choice).
    downscale_delay_s: int = ServingLimits().idle_downscale_seconds

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    @property
    def most_replicas(self) -> int:
        return self.max_replicas if self.autoscaling else self.replicas

    @property
    def ongoing_requests(self) -> int:
        return self.max_ongoing_requests or max(64, 2 * self.max_batch_size)

    @property
    def model_name(self) -> str:
        return MODEL_URI.fullmatch(self.model_uri)["name"]

    def to_dict(self) -> dict:
        return asdict(self)


def serving_request(*, name: Any, model_uri: Any, replicas: Any = None, min_replicas: Any = None,
                    max_replicas: Any = None, cpus: Any = 1.0, gpus: Any = 0, max_batch_size: Any = 32,
                    batch_wait_timeout_s: Any = 0.002, max_ongoing_requests: Any = None, task: Any = None,
                    max_tokens_limit: Any = 4096, gpu_quota: int | None = None,
                    limits: ServingLimits = ServingLimits()) -> ServingRequest:
    """Validate a request. Give `replicas`, or `min_replicas` and `max_replicas` for autoscaling.
    `gpu_quota`: the team's GPU quota, checked against GPUs per replica × the most replicas;
    `limits`: the catalog's bounds of one application (replicas, CPUs and GPUs per replica) and how long an
    autoscaled application may idle before it scales down to its minimum replicas."""
    problems: list[tuple[str, str]] = []

    def check(field: str, ok: bool, message: str) -> bool:
        if not ok:
            problems.append((field, message))
        return ok

    if check("name", isinstance(name, str), f"{name!r} is not a string; allowed: a DNS label"):
        check("name", bool(DNS_LABEL.fullmatch(name)) and len(name) <= MAX_DNS_LABEL,
              f"{name!r} is not a DNS label; allowed: at most {MAX_DNS_LABEL} lowercase letters, digits and '-', "
              "starting with a letter and ending with a letter or digit (e.g. 'iris-classifier')")
        check("name", not name.endswith(CANDIDATE_SUFFIX),
              f"{name!r} ends with {CANDIDATE_SUFFIX!r}, the route of an endpoint's candidate in a rollout; allowed: "
              "any other DNS label")
    check("model_uri", isinstance(model_uri, str) and bool(MODEL_URI.fullmatch(model_uri)),
          f"{model_uri!r} is not a registered model; allowed: 'models:/<name>@<alias>' or "
          "'models:/<name>/<version>' (e.g. 'models:/iris@champion')")

    autoscaling = min_replicas is not None or max_replicas is not None
    if autoscaling:
        check("replicas", replicas is None, f"{replicas!r} given together with min_replicas/max_replicas; "
              "allowed: either a fixed number of replicas or min_replicas and max_replicas (autoscaling)")
        lo_ok = _int(check, "min_replicas", min_replicas, 0, limits.max_replicas)
        hi_ok = _int(check, "max_replicas", max_replicas, 1, limits.max_replicas)
        if lo_ok and hi_ok:
            check("min_replicas", min_replicas <= max_replicas,
                  f"{min_replicas} is more than max_replicas ({max_replicas}); allowed: 0 to {max_replicas}")
    else:
        replicas = 1 if replicas is None else replicas
        _int(check, "replicas", replicas, 1, limits.max_replicas)

    most_cpus = limits.max_cpus_per_replica
    if _number(check, "cpus", cpus) and check("cpus", 0 < cpus <= most_cpus, f"{cpus!r} is out of range; allowed: "
                                              f"a number of CPUs per replica above 0, at most {most_cpus:g}"):
        cpus = float(cpus)
    if _number(check, "gpus", gpus):
        check("gpus", 0 <= gpus <= limits.max_gpus_per_replica and (gpus < 1 or float(gpus).is_integer()),
              f"{gpus!r} is not a GPU count; allowed: 0, a fraction below 1 (shared GPU) or a whole number up to "
              f"{limits.max_gpus_per_replica}")
    _int(check, "max_batch_size", max_batch_size, 1, MAX_BATCH_SIZE)
    if _number(check, "batch_wait_timeout_s", batch_wait_timeout_s):
        check("batch_wait_timeout_s", 0 <= batch_wait_timeout_s <= 1,
              f"{batch_wait_timeout_s!r} is out of range; allowed: 0 to 1 second")
    if max_ongoing_requests is not None and _int(check, "max_ongoing_requests", max_ongoing_requests, 1, 100_000) and \
            isinstance(max_batch_size, int):
        check("max_ongoing_requests", max_ongoing_requests >= max_batch_size,
              f"{max_ongoing_requests} is less than max_batch_size ({max_batch_size}), so batches never fill; "
              f"allowed: at least {max_batch_size}")
    check("task", task is None or task in TASKS, f"{task!r} is not a task; allowed: {', '.join(TASKS)} "
          "or unset (read from the model)")
    _int(check, "max_tokens_limit", max_tokens_limit, 1, 1_000_000)

    if gpu_quota is not None and not problems and gpus:
        most = max_replicas if autoscaling else replicas
        needed = math.ceil(gpus) * most
        check("gpus", needed <= gpu_quota,
              f"{gpus:g} per replica × {most} replica(s) needs {needed} GPUs, more than the team's GPU quota "
              f"of {gpu_quota}; allowed: at most {gpu_quota} GPUs in all")
    if problems:
        raise InvalidServingRequest(problems)
    return ServingRequest(name=name, model_uri=model_uri, replicas=1 if autoscaling else replicas,
                          min_replicas=min_replicas if autoscaling else None,
                          max_replicas=max_replicas if autoscaling else None, cpus=float(cpus),
                          gpus=float(gpus) if not float(gpus).is_integer() else int(gpus),
                          max_batch_size=max_batch_size, batch_wait_timeout_s=float(batch_wait_timeout_s),
                          max_ongoing_requests=max_ongoing_requests, task=task, max_tokens_limit=max_tokens_limit,
                          downscale_delay_s=limits.idle_downscale_seconds)


def _int(check, field: str, value: Any, low: int, high: int | None = None) -> bool:
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer ≥ {low}"
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if not check(field, isinstance(value, int) and not isinstance(value, bool), f"{shown} is not an integer; "
                 f"allowed: {allowed}"):
        return False
    return check(field, value >= low and (high is None or value <= high), f"{shown} is out of range; "
                 f"allowed: {allowed}")


def _number(check, field: str, value: Any) -> bool:
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300 \
        and math.isfinite(value)  # (a huge int is "finite" but overflows float())
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return check(field, finite, f"{shown} is not a number")


# --- Ray Serve ------------------------------------------------------------------------------------

def serve_application(request: ServingRequest, *, model_version: str, env: Mapping[str, str] | None = None,
                      import_path: str = IMPORT_PATH, surge: bool = False) -> dict:
    """One application of a Serve config: route `/<name>`, the generic deployment, its user_config.

    `model_version` is the version the request's alias resolved to: replicas load
    `models:/<name>/<version>`, so a replica restarted later serves the same model as the others
    even if the alias has moved since. The model goes in the application's `args`: a new version
    replaces the replicas, with `surge` the new ones first (the old version answers until they are
    ready, and on if they fail); batching goes in `user_config`, applied in place."""
    deployment: dict[str, Any] = {
        "name": DEPLOYMENT,
        "max_ongoing_requests": request.ongoing_requests,
        "ray_actor_options": {"num_cpus": request.cpus, "num_gpus": request.gpus},
        "user_config": {
            "max_batch_size": request.max_batch_size,
            "batch_wait_timeout_s": request.batch_wait_timeout_s,
            "max_tokens_limit": request.max_tokens_limit,
        },
    }
    if surge:
        deployment["max_surge_percent"] = 100
    if request.autoscaling:
        deployment["autoscaling_config"] = {
            "min_replicas": request.min_replicas,
            "max_replicas": request.max_replicas,
            # Scale out before batches queue: a replica is busy at about one full batch.
            "target_ongoing_requests": max(2, request.max_batch_size),
            # No traffic for this long: down to min_replicas (also from 1 to 0, Ray's
            # downscale_to_zero_delay_s being unset). On Kubernetes Ray's autoscaler then removes the
            # idle worker pods and their GPUs (ray_service's idleTimeoutSeconds).
            "downscale_delay_s": request.downscale_delay_s,
        }
    else:
        deployment["num_replicas"] = request.replicas
    app: dict[str, Any] = {
        "name": request.name,
        "route_prefix": f"/{request.name}",
        "import_path": import_path,
        "args": {
            "model_uri": f"models:/{request.model_name}/{model_version}",
            "model_version": str(model_version),
            "requested_uri": request.model_uri,
            "task": request.task,
        },
        "deployments": [deployment],
    }
    if env:
        # On the deployment, not the application: Serve builds each application in a task with the
        # application's runtime_env, and a task with none reuses an idle worker that has imported the app
        # module already instead of starting a new process (seconds off every deploy and rollout change).
        deployment["ray_actor_options"]["runtime_env"] = {"env_vars": dict(sorted(env.items()))}
    return app


# --- the local backend's warm spare: a replica started before it is needed (local.py) -------------------

# Serve names and routes of spares: "spare.<hex>" is never a DNS label, so never an endpoint's name or route.
SPARE_PREFIX = "spare."
SPARE_ARGS = {"spare": True}  # no model: the replica imports what loading one takes, and waits


def spare_application(serve_name: str, *, cpus: float = 1.0) -> dict:
    """A Serve application of the generic deployment without a model, under `serve_name` (SPARE_PREFIX...): its
    one replica imports Serve, MLflow's pyfunc and scikit-learn's loaders, then waits to be taken over."""
    return {"name": serve_name, "route_prefix": f"/{serve_name}", "import_path": IMPORT_PATH,
            "args": dict(SPARE_ARGS),
            "deployments": [{"name": DEPLOYMENT, "max_ongoing_requests": 64, "num_replicas": 1,
                             "ray_actor_options": {"num_cpus": cpus, "num_gpus": 0}, "user_config": {}}]}


def taken_over(spare: dict, request: ServingRequest, *, model_version: str, env: Mapping[str, str]) -> dict | None:
    """`request` served by the running replica of `spare` (spare_application's): the spare's Serve application
    with the request's route (`/<name>`), size and batching, and the model and the environment in the deployment's
    user_config, where the replica loads it (`reconfigure`). Serve applies all of that in place: the code version
    (import_path, args, the application's runtime_env) and the replica's ray_actor_options stay the spare's, so
    there is no build task and no new process; a new route prefix and user_config only reconfigure the replica.
    None when the request cannot run on the spare: other CPUs or GPUs per replica (a new actor), or autoscaling
    (from a fixed count to autoscaling in place is not tried here: such a deploy starts its own replicas)."""
    if request.autoscaling:
        return None
    app = serve_application(request, model_version=model_version)
    deployment, own = app["deployments"][0], spare["deployments"][0]
    if deployment["ray_actor_options"] != own["ray_actor_options"]:
        return None
    deployment["user_config"]["model"] = app["args"]
    deployment["user_config"]["env"] = dict(sorted(env.items()))
    return {**app, "name": spare["name"], "import_path": spare["import_path"], "args": copy.deepcopy(spare["args"])}


def settled(app: dict) -> dict:
    """`app` with its model in `args` and its environment in the deployment's runtime_env, as serve_application
    makes it (a taken-over spare's moved there; others unchanged). A change of the model (a new version, a
    rollout's candidate) starts from this: new args, new replicas, the old ones answering meanwhile."""
    user_config = app["deployments"][0].get("user_config") or {}
    if "model" not in user_config:
        return app
    app = copy.deepcopy(app)
    champion = app["deployments"][0]
    app["args"] = champion["user_config"].pop("model")
    env = champion["user_config"].pop("env", None)
    if env:
        champion["ray_actor_options"]["runtime_env"] = {"env_vars": dict(sorted(env.items()))}
    return app


def model_args(app: dict) -> dict:
    """The champion's model of `app` (its args, or a taken-over spare's user_config)."""
    return (app["deployments"][0].get("user_config") or {}).get("model") or app["args"]


def serve_config(applications: list[dict], *, http_host: str | None = None, http_port: int | None = None,
                 proxy_location: str = "HeadOnly") -> dict:
    """A whole Serve config (the body of `PUT /api/serve/applications/`, `serve deploy`'s file)."""
    config: dict[str, Any] = {"proxy_location": proxy_location}
    http = {k: v for k, v in (("host", http_host), ("port", http_port)) if v is not None}
    if http:
        config["http_options"] = http
    config["applications"] = applications
    return config


@dataclass(frozen=True)
class Candidate:
    """The version a rollout tries beside the champion (`requested_uri`: as the user named it)."""

    model_version: str
    requested_uri: str


# --- rollout: the recorded application with a candidate beside the champion (rollout.py); Serve runs it as two
# applications (serve_applications), and the rollout gateway routes between them ---------------------------------

def with_candidate(app: dict, *, model_version: str, requested_uri: str, rollout: Rollout,
                   inference_log: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict:
    """The record of `app` (serve_application's) in rollout: a `Candidate` deployment of the same size serving
    `model_version` of the same registered model (in `args`), the rollout's settings and the catalog's
    `inference_log` settings in the champion's user_config (serve_applications makes Serve's two applications of
    it, without these settings: they are the gateway's).
    `env`: the candidate's own variables over the champion's (its GPUs: CUDA_VISIBLE_DEVICES), in its
    `ray_actor_options.runtime_env`."""
    app = copy.deepcopy(without_candidate(settled(app)))
    champion = app["deployments"][0]
    name = MODEL_URI.fullmatch(app["args"]["model_uri"])["name"]
    app["args"]["candidate"] = {"model_uri": f"models:/{name}/{model_version}", "model_version": str(model_version),
                                "requested_uri": requested_uri}
    candidate = {**copy.deepcopy(champion), "name": CANDIDATE_DEPLOYMENT, "max_surge_percent": 100}
    if env:
        merged = {**_env_vars(champion), **env}
        candidate["ray_actor_options"]["runtime_env"] = {"env_vars": dict(sorted(merged.items()))}
    app["deployments"].append(candidate)
    champion["max_surge_percent"] = 100
    champion["user_config"]["rollout"] = rollout.to_dict()
    champion["user_config"]["inference_log"] = dict(inference_log)
    return app


def with_rollout(app: dict, rollout: Rollout) -> dict:
    """The recorded `app` in rollout with other settings (its champion's user_config, which serve_applications
    leaves out of Serve's applications: the settings are the gateway's)."""
    if candidate_of(app) is None:
        raise ValueError(f"application {app['name']!r} has no candidate")
    app = copy.deepcopy(app)
    app["deployments"][0]["user_config"]["rollout"] = rollout.to_dict()
    return app


def with_inference_log(app: dict, inference_log: Mapping[str, Any] | None) -> dict:
    """The recorded `app` in rollout with other inference-log settings (None: no log), kept like with_rollout's; the
    gateway records the evidence at their sample rate."""
    if candidate_of(app) is None:
        raise ValueError(f"application {app['name']!r} has no candidate")
    app = copy.deepcopy(app)
    user_config = app["deployments"][0]["user_config"]
    user_config.pop("inference_log", None)
    if inference_log is not None:
        user_config["inference_log"] = dict(inference_log)
    return app


def without_candidate(app: dict, *, promote: bool = False) -> dict:
    """`app` back to one model: the champion's version, or with `promote` the candidate's, with the
    candidate's variables (its GPUs) as the champion's."""
    app = copy.deepcopy(app)
    candidate = app["args"].pop("candidate", None)
    app["args"].pop("endpoint", None)
    own = [_env_vars(d) for d in app["deployments"] if d["name"] == CANDIDATE_DEPLOYMENT]
    app["deployments"] = [d for d in app["deployments"] if d["name"] != CANDIDATE_DEPLOYMENT]
    champion = app["deployments"][0]
    for key in ("rollout", "inference_log"):
        champion["user_config"].pop(key, None)
    if promote and candidate:
        app["args"].update(model_uri=candidate["model_uri"], model_version=candidate["model_version"])
        if own and own[0]:
            champion["ray_actor_options"]["runtime_env"] = {"env_vars": dict(sorted(own[0].items()))}
    return app


def _env_vars(deployment: dict) -> dict[str, str]:
    return deployment["ray_actor_options"].get("runtime_env", {}).get("env_vars", {})


def candidate_of(app: dict) -> dict | None:
    """The rollout of an application: the candidate's args with the champion's `rollout` and `inference_log`
    settings (None: the log is off)."""
    candidate = app.get("args", {}).get("candidate")
    if not candidate:
        return None
    user_config = app["deployments"][0]["user_config"]
    return {**candidate, "rollout": user_config.get("rollout"), "inference_log": user_config.get("inference_log")}


def serve_applications(app: dict) -> list[dict]:
    """The Serve applications of a recorded application: itself, or in a rollout the champion alone at its route and
    the candidate as an application of its own at `<route>--candidate`, which the rollout gateway (gateway.py) splits
    and mirrors to; the rollout's settings are the gateway's, so changing them changes no application."""
    candidate = app.get("args", {}).get("candidate")
    if not candidate:
        return [app]
    champion = without_candidate(app)
    own = next(d for d in app["deployments"] if d["name"] == CANDIDATE_DEPLOYMENT)
    return [champion, {
        **{k: copy.deepcopy(v) for k, v in champion.items() if k not in ("name", "route_prefix", "args", "deployments")},
        "name": f"{app['name']}{CANDIDATE_SUFFIX}", "route_prefix": f"{app['route_prefix']}{CANDIDATE_SUFFIX}",
        "args": {**{k: candidate.get(k) for k in ("model_uri", "model_version", "requested_uri")},
                 "task": app["args"].get("task")},
        "deployments": [{**copy.deepcopy(own), "name": DEPLOYMENT,
                         "user_config": champion["deployments"][0]["user_config"]}]}]


# --- Kubernetes -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodResources:
    """Sizes of the RayService's pods (Kubernetes quantities)."""

    head_cpu: str = "1"
    head_memory: str = "2Gi"
    worker_memory: str = "4Gi"


def ray_service(request: ServingRequest, *, namespace: str, model_version: str,
                env: Mapping[str, str] | None = None, image: str | None = None,
                gpu_resource: str = "nvidia.com/gpu", node_selector: Mapping[str, str] | None = None,
                tolerations: list[dict] | None = None, service_account: str | None = None,
                resources: PodResources = PodResources(), labels: Mapping[str, str] | None = None,
                mlflow_token: bool = False) -> dict:
    """A `RayService` (ray.io/v1) serving `request` in the team's namespace.

    One worker pod per Serve replica, sized for it: `cpus` CPUs, `ceil(gpus)` of `gpu_resource`
    in the limits when GPUs are asked for (then `node_selector`/`tolerations` of the GPU type and the
    GPU image). The head runs Serve's controller and proxy only (`num-cpus: 0`).

    A new model version changes only `serveConfigV2`, which KubeRay applies in place: Serve starts
    the new replicas before stopping the old ones (surge), so the worker group may grow to twice the
    replicas for the swap, through Ray's autoscaler (always on; it also follows Serve's autoscaling).
    The team's quota must leave room for that while a new version rolls out; without room the old
    version keeps answering and the new one waits. A changed cluster (CPUs, GPUs, image) gets a new
    cluster first (`upgradeStrategy: NewCluster`).

    Ray's token authentication is on (`authOptions: {mode: token}`, KubeRay 1.5.1+, Ray 2.52+): the
    dashboard (job submission), GCS and the other control-plane ports refuse callers without the
    cluster's token. KubeRay generates the token into a Secret of each RayCluster (named after it,
    deleted with it) and hands it to the Ray containers and its own dashboard client; it is never in
    this spec, and the notebook's service account cannot read Secrets. Serve's HTTP endpoint (the
    model's `/predict`) stays open to the team's namespace; the team namespaces' NetworkPolicies keep
    everything else out (hub_config/render/network.py).

    `mlflow_token`: the pods reach MLflow's access control with a service-account token projected for
    MLflow (mlplatform_core/mlflow_token.py; the serving account mounts no API token of its own)."""
    env = dict(sorted({**(env or {}), **(mlflow_token_environment() if mlflow_token else {})}.items()))
    gpus = math.ceil(request.gpus)
    image = image or (DEFAULT_GPU_IMAGE if gpus else DEFAULT_IMAGE)
    meta_labels = {"app.kubernetes.io/name": request.name, COMPONENT_LABEL: SERVING_COMPONENT,
                   MANAGED_BY_LABEL: MANAGED_BY, **(labels or {})}
    env_list = [{"name": k, "value": v} for k, v in env.items()]

    head_container = {
        "name": "ray-head",
        "image": image,
        "env": env_list,
        "ports": [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                  {"name": "serve", "containerPort": 8000}],
        "resources": {"requests": {"cpu": resources.head_cpu, "memory": resources.head_memory},
                      "limits": {"cpu": resources.head_cpu, "memory": resources.head_memory}},
    }
    worker_limits: dict[str, str] = {"cpu": cpu_quantity(request.cpus), "memory": resources.worker_memory}
    if gpus:
        worker_limits[gpu_resource] = str(gpus)
    worker_container = {
        "name": "ray-worker",
        "image": image,
        "env": env_list,
        "resources": {"requests": {"cpu": cpu_quantity(request.cpus), "memory": resources.worker_memory},
                      "limits": worker_limits},
    }
    worker_pod: dict[str, Any] = {"containers": [worker_container]}
    head_pod: dict[str, Any] = {"containers": [head_container]}
    if service_account:
        worker_pod["serviceAccountName"] = head_pod["serviceAccountName"] = service_account
    if mlflow_token:
        for pod in (head_pod, worker_pod):
            pod["volumes"] = [dict(MLFLOW_TOKEN_VOLUME)]
            pod["containers"][0]["volumeMounts"] = [dict(MLFLOW_TOKEN_MOUNT)]
    if gpus and node_selector:
        worker_pod["nodeSelector"] = dict(node_selector)
    if gpus and tolerations:
        worker_pod["tolerations"] = [dict(t) for t in tolerations]

    workers = request.most_replicas
    worker_group = {
        "groupName": "replicas",
        "replicas": request.min_replicas if request.autoscaling else workers,
        "minReplicas": request.min_replicas if request.autoscaling else workers,
        "maxReplicas": 2 * workers,  # room for the new replicas while a new version rolls out
        # Ray counts whole CPUs: a replica of 0.5 CPU still needs a worker that offers one.
        "rayStartParams": {"num-cpus": str(max(1, math.ceil(request.cpus)))},
        "template": {"metadata": {"labels": dict(meta_labels)}, "spec": worker_pod},
    }
    cluster: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"idleTimeoutSeconds": 60},  # the old version's workers go soon after a swap
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": {"metadata": {"labels": dict(meta_labels)}, "spec": head_pod},
        },
        "workerGroupSpecs": [worker_group],
    }
    app = serve_application(request, model_version=model_version, surge=True)  # env comes from the pods
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": request.name, "namespace": namespace, "labels": meta_labels,
                     "annotations": {annotation_key("model-uri"): request.model_uri,
                                     annotation_key("model-version"): str(model_version)}},
        "spec": {
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": yaml.safe_dump({"applications": [app]}, sort_keys=False),
            "rayClusterConfig": cluster,
        },
    }
