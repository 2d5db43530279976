"""FakeKube: the fake API server on a free loopback port, in a background thread, with test helpers."""

from __future__ import annotations

import asyncio
import secrets
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml
from aiohttp import web

from . import resources
from .api import Api, Fault, Request
from .errors import ApiError
from .kubelet import FakeKubelet, container_env
from .rbac import Subject
from .store import Store


class FakeKube:
    """A stateful fake Kubernetes API server. Use as a context manager, or start()/stop().

    Helpers run on the server's loop, so they see and make exactly what clients see and make; a
    refused write raises ApiError (with .code, .reason, .message) as the client would get it.
    """

    def __init__(self, kubelet: bool = False, validate: bool = True, token: str | None = None):
        self.token = token or f"fake-{secrets.token_hex(8)}"
        self._kubelet_wanted, self._validate = kubelet, validate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> FakeKube:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve():
            self.store = Store(validate=self._validate)
            self.api = Api(self.store, self.token)
            if self._kubelet_wanted:
                self.store.kubelet = FakeKubelet(self.store)
            # stop() ends open watches after a second (aiohttp waits 60 s for them by default, past stop's 10 s),
            # as an API server going away ends its clients' watches.
            self._runner = web.AppRunner(self.api.app(), handler_cancellation=True, access_log=None,
                                         shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-kube", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Kubernetes API server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeKube:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: str | Path, namespace: str = "default", token: str | None = None) -> Path:
        """A kubeconfig for this server with a bearer token: the admin's (system:masters), or `token`."""
        path = Path(path)
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return path

    # --- who calls: bearer tokens the authorizer (rbac.py) checks -------------------------------------------
    def token_for(self, user: str | None = None, groups: tuple[str, ...] = (), *,
                  service_account: str | None = None, pod: str | None = None) -> str:
        """A new bearer token for a user (`user=`, `groups=`) or a ServiceAccount (`service_account="ns/name"`,
        with the groups the API server gives one, and its uid if it is stored); its requests are authorized by
        the stored RBAC objects. With `pod=`, a token bound to that pod of the account's namespace, as the
        kubelet mounts one (KEP-1205): admission webhooks see userInfo.extra
        `authentication.kubernetes.io/pod-name` and `pod-uid` (the stored pod's uid, or a fresh one)."""
        if (user is None) == (service_account is None):
            raise ValueError("token_for: give exactly one of user= or service_account='<namespace>/<name>'")
        if pod is not None and service_account is None:
            raise ValueError("token_for: pod= binds a service account's token; give service_account= too")
        if service_account is not None:
            namespace, _, name = service_account.partition("/")
            account = self.get("serviceaccounts", name, namespace)
            extra = None
            if pod is not None:
                bound = self.get("pods", pod, namespace)
                extra = {"authentication.kubernetes.io/pod-name": [pod],
                         "authentication.kubernetes.io/pod-uid": [bound["metadata"]["uid"] if bound
                                                                  else str(uuid.uuid4())]}
            subject = Subject.service_account(namespace, name, extra, account["metadata"]["uid"] if account else "")
        else:
            subject = Subject.user_named(user, groups)
        token = f"fake-{secrets.token_hex(8)}"
        self._call(self.api.tokens.__setitem__, token, subject)
        return token

    # --- where Services are: the endpoints admission webhooks are called at -------------------------------------
    def route_service(self, namespace: str, name: str, port: int, address: tuple[str, int]) -> None:
        """Send what the API server sends to Service `namespace/name` on `port` (a webhook's clientConfig.service)
        to `address`, e.g. ("127.0.0.1", <a test server's port>); TLS is still checked as `<name>.<namespace>.svc`.
        An unrouted Service has no endpoints."""
        self._call(self.api.webhooks.routes.__setitem__, (namespace, name, port), tuple(address))

    def _call(self, fn: Callable, *args, **kwargs):
        async def call():
            return fn(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    # --- playing the cluster and the operators ------------------------------------------------------------
    def seed(self, obj: dict) -> dict:
        """Create `obj` as a client would (validated, admitted); returns the stored object."""
        res = resources.for_object(obj)
        return self._call(self.store.create, res, obj.get("metadata", {}).get("namespace"), obj)

    def namespace(self, name: str, **labels: str) -> dict:
        return self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The stored object, or None. kind: `pods`, `Pod`, `rayservices`, `RayService`, …"""
        try:
            return self._call(self.store.get, resources.by_name(kind), namespace, name)
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        return self._call(self.store.list, resources.by_name(kind), namespace, label_selector)[0]

    def patch(self, kind: str, name: str, patch: dict, namespace: str | None = None) -> dict:
        """A JSON merge patch of the main resource."""
        return self._call(self.store.patch, resources.by_name(kind), namespace, name, patch,
                          "application/merge-patch+json")

    def patch_status(self, kind: str, name: str, status: dict, namespace: str | None = None) -> dict:
        """Merge `status` into the object's status through the status subresource (validated)."""
        return self._call(self.store.patch, resources.by_name(kind), namespace, name, {"status": status},
                          "application/merge-patch+json", subresource="status")

    def delete(self, kind: str, name: str, namespace: str | None = None, grace: int | None = None) -> dict:
        return self._call(self.store.delete, resources.by_name(kind), namespace, name, grace)

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """What `read_namespaced_pod_log` answers for the pod (the pod must exist)."""
        self._call(self.store.get, resources.by_name("pods"), namespace, name)
        self._call(self.store.logs.__setitem__, (namespace, name), text)

    def container_env(self, pod: dict, container: str) -> dict[str, str]:
        """The environment the kubelet starts `container` of `pod` with: `value`s, and `valueFrom` Secret and
        ConfigMap keys read now (a missing one raises ApiError, as the kubelet's CreateContainerConfigError)."""
        return self._call(container_env, self.store, pod, container)

    def kubelet(self, **options) -> FakeKubelet:
        """Turn the fake kubelet on (options: node, pod_ip, start_delay, max_grace, events)."""
        def install():
            self.store.kubelet = FakeKubelet(self.store, **options)
            return self.store.kubelet
        return self._call(install)

    # --- faults and the request log ----------------------------------------------------------------------
    def fail(self, verb: str, kind: str, code: int = 500, message: str = "injected failure", times: int = 1,
             name: str | None = None, subresource: str | None = None, after: bool = False,
             delay: float = 0.0) -> Fault:
        """Answer the next `times` matching requests with an error Status instead of serving them;
        with `after`, serve them and then answer the error (a write that happened, seen as failed),
        `delay` seconds later (past the client's timeout: a write that happened, its answer never seen)."""
        fault = Fault(verb, resources.by_name(kind).plural, code, message, times, name, subresource, after, delay)
        self._call(self.api.faults.append, fault)
        return fault

    @property
    def requests(self) -> list[Request]:
        return list(self.api.requests)

    def count(self, verb: str | None = None, kind: str | None = None) -> int:
        plural = resources.by_name(kind).plural if kind else None
        return sum(1 for r in self.api.requests
                   if verb in (None, r.verb) and plural in (None, r.resource))

    def clear_requests(self) -> None:
        self._call(self.api.requests.clear)
