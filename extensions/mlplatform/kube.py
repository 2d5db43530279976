"""The notebook's Kubernetes client: the API server of its own cluster, its team's namespace.

    client = kube.connect()                                  # in a pod: its service account; else $KUBECONFIG
    services = kube.CustomObjects(client, kube.RAY_SERVICES, "team-vision")
    services.get("iris")                                     # a dict, or None

Every failed call raises KubeError with the API server's status, reason and message (which names
the field or the quota); never the request's headers, so never the token.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from mlplatform_core.names import LABEL_PREFIX, MANAGED_BY, MANAGED_BY_LABEL

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
TIMEOUT = 30  # seconds per call: a hung API server must not hang the kernel


@dataclass(frozen=True)
class CustomResource:
    group: str
    version: str
    plural: str
    kind: str


RAY_SERVICES = CustomResource("ray.io", "v1", "rayservices", "RayService")
SPARK_APPLICATIONS = CustomResource("sparkoperator.k8s.io", "v1beta2", "sparkapplications", "SparkApplication")


class KubeError(RuntimeError):
    """A Kubernetes API call failed. `status` is the HTTP status (None: the API server was not
    reached), `reason` the API's reason (NotFound, AlreadyExists, Forbidden, Invalid, ...)."""

    def __init__(self, action: str, message: str, status: int | None = None, reason: str = ""):
        self.action, self.message, self.status, self.reason = action, message, status, reason
        where = f" ({status} {reason})" if status else ""
        super().__init__(f"{action} failed{where}: {message}")

    @property
    def committed_maybe(self) -> bool:
        """Whether a write that raised this may still have been carried out (timeouts, 5xx)."""
        return self.status is None or self.status >= 500


def connect(environ: Mapping[str, str] | None = None) -> k8s.ApiClient:
    """An API client: the pod's service account inside a cluster, else the kubeconfig at $KUBECONFIG
    (first existing file of the list) or ~/.kube/config."""
    env = os.environ if environ is None else environ
    if env.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT_TOKEN.exists():
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    candidates = [p for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p]
    candidates.append(str(Path.home() / ".kube" / "config"))
    for path in candidates:
        if Path(path).is_file():
            try:
                return k8s_config.new_client_from_config(config_file=path)
            except k8s_config.ConfigException as e:
                raise KubeError("reading the kubeconfig", f"{path}: {e}") from None
    raise KubeError("finding the Kubernetes API", "not in a pod with a service account token "
                    f"({SERVICE_ACCOUNT_TOKEN}) and no kubeconfig at {', '.join(candidates)}; set KUBECONFIG")


def call(action: str, fn: Callable, *args, **kwargs) -> Any:
    """`fn(*args, **kwargs)` with a timeout; API and connection errors become KubeError."""
    try:
        return fn(*args, _request_timeout=TIMEOUT, **kwargs)
    except ApiException as e:
        status, reason, message = e.status, e.reason or "", (e.reason or "").strip()
        try:
            body = json.loads(e.body)
            message, reason = body.get("message") or message, body.get("reason") or reason
        except (TypeError, ValueError):
            if e.body:
                message = str(e.body)[:500]
        raise KubeError(action, message, status, reason) from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise KubeError(action, f"cannot reach the Kubernetes API server: {type(e).__name__}: {e}") from None


class CustomObjects:
    """One custom resource in one namespace: get / list / create / patch / delete as plain dicts."""

    def __init__(self, api_client: k8s.ApiClient, resource: CustomResource, namespace: str):
        self.api = k8s.CustomObjectsApi(api_client)
        self.resource, self.namespace = resource, namespace
        self._args = (resource.group, resource.version, namespace, resource.plural)

    def _what(self, name: str = "") -> str:
        return f"{self.resource.kind} {name + ' ' if name else ''}in namespace {self.namespace}"

    def get(self, name: str) -> dict | None:
        try:
            return call(f"reading {self._what(name)}", self.api.get_namespaced_custom_object, *self._args, name)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(self, label_selector: str | None = None) -> list[dict]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        found = call(f"listing {self._what()}", self.api.list_namespaced_custom_object, *self._args, **kwargs)
        return found.get("items") or []

    def create(self, body: dict) -> dict:
        name = body["metadata"]["name"]
        return call(f"creating {self._what(name)}", self.api.create_namespaced_custom_object, *self._args, body)

    def patch(self, name: str, patch: dict | list) -> dict:
        """A list is a JSON patch, a dict a JSON merge patch. The content type is set here: the client
        would send a list as a merge patch too, which the API server refuses."""
        kind = "application/json-patch+json" if isinstance(patch, list) else "application/merge-patch+json"
        return call(f"updating {self._what(name)}", self.api.patch_namespaced_custom_object, *self._args, name,
                    patch, _content_type=kind)

    def delete(self, name: str) -> bool:
        """Delete `name`; False when it was already gone."""
        try:
            call(f"deleting {self._what(name)}", self.api.delete_namespaced_custom_object, *self._args, name)
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise


class Pods:
    """What the notebook reads of pods and events in its namespace."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str):
        self.api = k8s.CoreV1Api(api_client)
        self.namespace = namespace

    def log(self, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        kwargs = {k: v for k, v in (("container", container), ("tail_lines", tail_lines)) if v is not None}
        # Raw: the client turns a text body into the repr of its bytes ("b'...'") otherwise.
        response = call(f"reading the log of pod {name} in namespace {self.namespace}",
                        self.api.read_namespaced_pod_log, name, self.namespace, _preload_content=False, **kwargs)
        return response.data.decode("utf-8", "replace")

    def warnings(self, name_prefix: str) -> list[dict]:
        """Warning events of objects named `name_prefix`…, oldest first, as plain dicts."""
        events = call(f"listing events in namespace {self.namespace}", self.api.list_namespaced_event,
                      self.namespace, field_selector="type=Warning")
        found = [e for e in events.items if (e.involved_object.name or "").startswith(name_prefix)]
        found.sort(key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or ""))
        return [{"object": f"{e.involved_object.kind}/{e.involved_object.name}", "reason": e.reason,
                 "message": e.message or ""} for e in found]


# --- what both Kubernetes backends share -------------------------------------------------------
def annotation(obj: Mapping | None, key: str) -> str:
    """The platform's annotation `mlplatform.io/<key>` of an object ("" when unset)."""
    return (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(LABEL_PREFIX + key, "")


def managed(obj: Mapping, **labels: str) -> bool:
    """Whether the platform made `obj` (and it carries `labels`)."""
    found = obj["metadata"].get("labels") or {}
    return found.get(MANAGED_BY_LABEL) == MANAGED_BY and all(found.get(k) == v for k, v in labels.items())


def translating(translate: Callable[[KubeError], Exception]) -> Callable[..., Any]:
    """`call(fn, *args)` that raises a KubeError of `fn` as `translate(error)`: each backend's own
    errors, with the status the REST API answers."""
    def call(fn: Callable, *args):
        try:
            return fn(*args)
        except KubeError as error:
            raise translate(error) from None
    return call


def create_or_clean_up(objects: CustomObjects, body: dict, marker: str | None = None) -> dict:
    """Create `body`; when the call failed but may have been carried out (timeout, 5xx), delete what
    this call made, so a failure leaves nothing behind. `marker`: an annotation whose value is unique
    to this call (unset: the name itself is, e.g. a fresh application id). Raises the KubeError."""
    name = body["metadata"]["name"]
    try:
        return objects.create(body)
    except KubeError as error:
        if error.committed_maybe:
            with contextlib.suppress(KubeError):  # unreachable API server: the error raised says so
                made = objects.get(name)
                if made and (marker is None or annotation(made, marker) == annotation(body, marker)):
                    objects.delete(name)
        raise
