"""A stateful fake Kubernetes API server for tests.

Decision: our own small aiohttp server, not PyPI `kmock`. kmock's emulator would have needed a shim
for nearly every behaviour the tests rely on (uid / resourceVersion / creationTimestamp, watch from a
resourceVersion, `watch=True`, selectors, PUT, JSON patch, the status subresource, real Status
reasons such as AlreadyExists, validation, quota), and its object store is locked inside its own
request handler, where quota admission and a kubelet cannot hook in. This one is ~2,400 lines in
small modules: resources (what is served), store (state, admission), api (HTTP, authentication),
rbac (the RBAC authorizer), validation, quota, patching, selectors, admission (policies), webhooks
(admission webhooks), kubelet, server (thread, helpers), kubespawner (pointing KubeSpawner at it).

    with FakeKube(kubelet=True) as fake:
        fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.namespace("team-vision")
        ...  # clients (kubernetes, kubernetes_asyncio, KubeSpawner) talk to fake.url
        fake.patch_status("rayservices", "x", {...}, namespace="team-vision")  # play the operator
        assert fake.count("list", "pods") == 0
        token = fake.token_for(service_account="team-vision/mlplatform-notebook")  # RBAC applies to it
        fake.route_service("jupyterhub", "hub", 10102, ("127.0.0.1", port))  # where a webhook Service answers

Who calls: the admin token (`fake.token`, in every kubeconfig by default) is in `system:masters`, which
RBAC lets do anything; `fake.token_for(...)` tokens are authorized by the Roles, ClusterRoles and
bindings created in the fake (rbac.py); no token is `system:anonymous`; an unknown token is 401.
ValidatingAdmissionPolicies and their bindings created through the API are evaluated on every write
that comes through the HTTP API, CEL by cel-python (admission.py). Then the validating admission webhooks
of ValidatingWebhookConfigurations are called, before anything is stored (webhooks.py): an
admission.k8s.io/v1 AdmissionReview over TLS verified against the caBundle (as `<service>.<ns>.svc` for a
Service, reached where `fake.route_service(...)` says), matched by rules, namespace and object selectors;
a refusal answers the webhook's status, a failed call 500 under failurePolicy Fail. The caller's userInfo
includes a pod-bound token's extra (`fake.token_for(service_account=..., pod="jupyter-alice")`).

Limits (what the real API server does and this does not): RBAC without aggregated ClusterRoles,
nonResourceURLs, the escalate/bind check on writing roles, impersonation or default roles (discovery is
open to any authenticated caller); no defaulting beyond pod requests-from-limits, qosClass, a service's
clusterIP, the namespace label and a webhook configuration's defaults; field selectors accept any dotted
path (the real server allows a few per kind); a watch with a label selector does not turn "no longer
matches" into DELETED; no pagination (limit/continue), server-side apply, protobuf, or BOOKMARKs unless
sendInitialEvents; namespaces are deleted at once (no Terminating phase) with everything in them; no
owner references or garbage collection; quota covers pods only (no scopes, no object counts); CRDs get
no defaulting, no CEL rules; names are checked as DNS subdomains (services, namespaces: labels), not per
KubeRay's own length limits; no mutating webhooks (nor mutating policies), AdmissionReview v1 only; a
webhook sees the object with the uid and creationTimestamp of a dry run of the write, which the stored
object does not keep.
"""

from .api import Fault, Request
from .errors import ApiError
from .kubelet import FakeKubelet
from .kubespawner import point_kubespawner_at
from .server import FakeKube

__all__ = ["ApiError", "FakeKube", "FakeKubelet", "Fault", "Request", "point_kubespawner_at"]
