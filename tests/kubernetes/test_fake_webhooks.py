"""The fake API server calls validating admission webhooks as the real one does: over TLS checked against the
configuration's caBundle, with an AdmissionReview of the write, before anything is stored, failing closed or
open as the failurePolicy says. The webhook here is a small HTTPS server the test runs (Webhook)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import kubernetes
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NS, HOOKS = "team-a", "webhooks"
SERVICE = "hooks"
ADMISSION = ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations")


# --- a CA, and a serving certificate for the webhook Service (and 127.0.0.1, for url webhooks) ---------------
def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _ca(now) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("webhook test CA")).issuer_name(_name("webhook test CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _bundle(cert: x509.Certificate) -> str:
    """A clientConfig.caBundle: base64 of the PEM."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> SimpleNamespace:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca = _ca(now)
    _, other_ca = _ca(now)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(f"{SERVICE}.{HOOKS}.svc"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(_name(f"{SERVICE}.{HOOKS}.svc")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("webhook-tls")
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return SimpleNamespace(cert=folder / "tls.crt", key=folder / "tls.key", ca_bundle=_bundle(ca),
                           other_ca_bundle=_bundle(other_ca))


# --- the webhook ---------------------------------------------------------------------------------------------
def allow(request: dict) -> dict:
    return {"allowed": True}


class Webhook:
    """An HTTPS admission webhook in threads: answers each AdmissionReview with `answer(request)` (the response,
    its uid filled in unless given) and keeps (path, request) of every call in `calls`."""

    def __init__(self, tls: SimpleNamespace):
        self.answer, self.calls, self.release = allow, [], threading.Event()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.calls.append((self.path.partition("?")[0], review["request"]))
                response = {"uid": review["request"]["uid"], **webhook.answer(review["request"])}
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a caller that gave up (the timeout test) is not an error here

        self.server = Server(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="webhook", daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def webhook(tls):
    server = Webhook(tls)
    yield server
    server.stop()


@pytest.fixture
def cluster(fake_kube, webhook):
    fake_kube.namespace(NS, team="a")
    fake_kube.namespace(HOOKS)
    fake_kube.route_service(HOOKS, SERVICE, 443, ("127.0.0.1", webhook.port))
    return fake_kube


def client(fake, token: str | None = None) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration(host=fake.url, api_key={"authorization": f"Bearer {token or fake.token}"})
    return kubernetes.client.ApiClient(config)


def core(fake, token: str | None = None) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client(fake, token))


def custom(fake, token: str | None = None) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client(fake, token))


def refused(call, *args, **kwargs) -> tuple[int, dict]:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        call(*args, **kwargs)
    return caught.value.status, json.loads(caught.value.body)


def hook(name: str = "budgets", path: str = "/admit", resources=("configmaps",), operations=("CREATE", "UPDATE"),
         group: str = "", ca: str | None = "", **fields) -> dict:
    """One webhook of a configuration, to the test's Service; ca="" means the test CA, None no caBundle."""
    config = {"service": {"namespace": HOOKS, "name": SERVICE, "path": path}}
    if ca is not None:
        config["caBundle"] = ca
    return {"name": f"{name}.mlplatform.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": config, "rules": [{"apiGroups": [group], "apiVersions": ["*"],
                                               "operations": list(operations), "resources": list(resources)}],
            **fields}


def configure(fake, tls, name: str, *hooks: dict) -> dict:
    """Create a ValidatingWebhookConfiguration through the API (checked and defaulted as the API server does)."""
    for h in hooks:
        if h["clientConfig"].get("caBundle") == "":
            h["clientConfig"]["caBundle"] = tls.ca_bundle
    body = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name}, "webhooks": list(hooks)}
    return custom(fake).create_cluster_custom_object(*ADMISSION, body)


def config_map(name: str, labels: dict | None = None, **data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}}, "data": data}


def ray_service(name: str) -> dict:
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name},
            "spec": {"serveConfigV2": "applications: []", "rayClusterConfig": {"headGroupSpec": {
                "rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head", "image": "ray:2"}]}}}}}}


# --- tests ---------------------------------------------------------------------------------------------------
def test_an_allowed_create_is_stored_after_the_webhook_saw_it(cluster, webhook, tls):
    stored = configure(cluster, tls, "budgets", hook(group="ray.io", resources=["rayservices"]))["webhooks"][0]
    defaulted = ("failurePolicy", "matchPolicy", "timeoutSeconds", "namespaceSelector", "objectSelector")
    assert {key: stored[key] for key in defaulted} == {  # the API server's defaults
        "failurePolicy": "Fail", "matchPolicy": "Equivalent", "timeoutSeconds": 10, "namespaceSelector": {},
        "objectSelector": {}}
    assert (stored["clientConfig"]["service"]["port"], stored["rules"][0]["scope"]) == (443, "*")
    webhook.answer = lambda request: {"allowed": True, "warnings": ["budget 80% used"]}

    answer = custom(cluster).create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", ray_service("x"),
                                                             _preload_content=False)

    assert answer.status == 201 and answer.headers["Warning"] == '299 - "budget 80% used"'
    created = cluster.get("rayservices", "x", NS)
    assert created is not None
    [(path, request)] = webhook.calls
    assert path == "/admit"
    assert uuid.UUID(request["uid"])
    assert request["kind"] == request["requestKind"] == {"group": "ray.io", "version": "v1", "kind": "RayService"}
    assert request["resource"] == request["requestResource"] == {"group": "ray.io", "version": "v1",
                                                                 "resource": "rayservices"}
    assert (request["operation"], request["namespace"], request["name"]) == ("CREATE", NS, "x")
    assert request["object"]["spec"] == created["spec"] and request["oldObject"] is None
    assert request["dryRun"] is False and "subResource" not in request
    assert request["options"] == {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    assert request["userInfo"]["username"] == "system:admin"
    assert "system:masters" in request["userInfo"]["groups"]


def test_a_url_webhook_is_verified_as_its_host(cluster, webhook, tls):
    url = hook(resources=["configmaps"])
    url["clientConfig"] = {"url": f"https://127.0.0.1:{webhook.port}/by-url", "caBundle": tls.ca_bundle}
    configure(cluster, tls, "budgets", url)
    core(cluster).create_namespaced_config_map(NS, config_map("c"))
    assert webhook.paths() == ["/by-url"]


def test_a_denial_answers_the_webhooks_code_and_message_and_stores_nothing(cluster, webhook, tls):
    configure(cluster, tls, "b-second", hook("second", path="/second"))
    configure(cluster, tls, "a-first", hook("first", path="/first"))
    webhook.answer = lambda request: {"allowed": False, "status": {"code": 409, "reason": "Conflict",
                                                                   "message": "team-a is over its GPU budget"}}

    code, body = refused(core(cluster).create_namespaced_config_map, NS, config_map("c"))

    # Both are called; the first configuration by name answers.
    assert (code, body["reason"]) == (409, "Conflict")
    assert body["message"] == ('configmaps "c" is forbidden: admission webhook "first.mlplatform.io" denied the '
                               "request: team-a is over its GPU budget")
    assert sorted(webhook.paths()) == ["/first", "/second"]
    assert cluster.get("configmaps", "c", NS) is None
    webhook.answer = lambda request: {"allowed": False}
    code, body = refused(core(cluster).create_namespaced_config_map, NS, config_map("c"))
    assert (code, body["reason"]) == (403, "Forbidden")
    assert body["message"] == ('configmaps "c" is forbidden: admission webhook "first.mlplatform.io" denied the '
                               "request without explanation")


def test_a_webhook_may_read_the_api_while_it_answers(cluster, webhook, tls):
    cluster.seed({**config_map("budget", allowed="false"), "metadata": {"name": "budget", "namespace": NS}})
    configure(cluster, tls, "budgets", hook(group="ray.io", resources=["rayservices"], timeoutSeconds=5))

    def answer(request):  # as the platform's webhook does: read the team's budget from the API server
        budget = core(cluster).read_namespaced_config_map("budget", request["namespace"])
        if budget.data["allowed"] == "true":
            return {"allowed": True}
        return {"allowed": False, "status": {"message": f"budget of {request['namespace']} is spent"}}
    webhook.answer = answer

    code, body = refused(custom(cluster).create_namespaced_custom_object, "ray.io", "v1", NS, "rayservices",
                         ray_service("x"))
    assert code == 403 and body["message"].endswith(f"denied the request: budget of {NS} is spent")
    cluster.patch("configmaps", "budget", {"data": {"allowed": "true"}}, namespace=NS)
    custom(cluster).create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", ray_service("x"))
    assert cluster.get("rayservices", "x", NS) is not None


def test_webhooks_are_called_only_for_writes_their_rules_and_selectors_select(cluster, webhook, tls):
    configure(cluster, tls, "selective",
              hook("object", path="/object", objectSelector={"matchLabels": {"admit": "yes"}}),
              hook("namespace", path="/namespace", operations=["CREATE"],
                   namespaceSelector={"matchExpressions": [{"key": "team", "operator": "In", "values": ["b"]}]}),
              hook("rules", path="/rules", resources=["secrets"], operations=["DELETE"]),
              hook("pods", path="/pods", resources=["pods/status"], operations=["*"]))
    api = core(cluster)

    api.create_namespaced_config_map(NS, config_map("plain"))
    api.create_namespaced_secret(NS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    assert webhook.paths() == []
    api.create_namespaced_config_map(NS, config_map("labelled", {"admit": "yes"}))
    assert webhook.paths() == ["/object"]
    # The object selector matches the old object too: taking the label off is still seen.
    api.patch_namespaced_config_map("labelled", NS, {"metadata": {"labels": {"admit": None}}})
    assert webhook.paths() == ["/object", "/object"]
    assert webhook.calls[-1][1]["oldObject"]["metadata"]["labels"] == {"admit": "yes"}
    api.delete_namespaced_secret("s", NS)
    assert webhook.paths()[-1] == "/rules"
    cluster.namespace("team-b", team="b")
    api.create_namespaced_config_map("team-b", config_map("plain"))
    assert webhook.paths()[-1] == "/namespace"
    # A rule on `pods/status` sees status writes only.
    webhook.calls.clear()
    api.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                   "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})
    assert webhook.paths() == []
    api.patch_namespaced_pod_status("p", NS, {"status": {"phase": "Running"}})
    assert webhook.paths() == ["/pods"]
    assert webhook.calls[0][1]["subResource"] == "status"


def test_subresource_writes_are_sent_only_where_a_rule_names_them(cluster, webhook, tls):
    configure(cluster, tls, "main", hook("main", path="/main", group="ray.io", resources=["*"]))
    configure(cluster, tls, "status", hook("status", path="/status", group="ray.io", resources=["rayservices/status"]))
    api = custom(cluster)
    api.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", ray_service("x"))
    assert webhook.paths() == ["/main"]
    api.patch_namespaced_custom_object_status("ray.io", "v1", NS, "rayservices", "x",
                                              {"status": {"serviceStatus": "Running"}})
    assert webhook.paths() == ["/main", "/status"]
    request = webhook.calls[-1][1]
    assert (request["operation"], request["subResource"]) == ("UPDATE", "status")
    assert request["object"]["status"] == {"serviceStatus": "Running"} and "status" not in request["oldObject"]


def test_match_conditions_select_by_cel_and_an_error_fails_closed(cluster, webhook, tls):
    configure(cluster, tls, "budgets", hook(matchConditions=[
        {"name": "not-skipped", "expression": "object.metadata.name != 'skip'"},
        {"name": "by-people", "expression": "request.userInfo.username.startsWith('system:')"}]))
    api = core(cluster)
    api.create_namespaced_config_map(NS, config_map("skip"))
    assert webhook.paths() == []
    api.create_namespaced_config_map(NS, config_map("c"))
    assert webhook.paths() == ["/admit"]
    cluster.patch("validatingwebhookconfigurations", "budgets", {"webhooks": [hook(ca=tls.ca_bundle, matchConditions=[
        {"name": "broken", "expression": "object.spec.replicas > 0"}])]})  # a ConfigMap has no spec
    code, body = refused(api.create_namespaced_config_map, NS, config_map("d"))
    assert code == 500 and 'failed calling webhook "budgets.mlplatform.io"' in body["message"]


def test_delete_sends_the_old_object_and_a_denial_keeps_it(cluster, webhook, tls):
    cluster.seed({**config_map("c"), "metadata": {"name": "c", "namespace": NS}})
    configure(cluster, tls, "budgets", hook(operations=["DELETE"]))
    webhook.answer = lambda request: {"allowed": False, "status": {"message": "in use"}}

    assert refused(core(cluster).delete_namespaced_config_map, "c", NS)[0] == 403
    assert cluster.get("configmaps", "c", NS) is not None
    [(_, request)] = webhook.calls
    assert (request["operation"], request["name"], request["object"]) == ("DELETE", "c", None)
    assert request["oldObject"]["metadata"]["uid"] == cluster.get("configmaps", "c", NS)["metadata"]["uid"]
    assert request["options"]["kind"] == "DeleteOptions"
    webhook.answer = allow
    core(cluster).delete_namespaced_config_map("c", NS, grace_period_seconds=0)
    assert cluster.get("configmaps", "c", NS) is None
    assert webhook.calls[-1][1]["options"]["gracePeriodSeconds"] == 0


def test_a_dry_run_is_sent_as_one_and_stores_nothing(cluster, webhook, tls):
    configure(cluster, tls, "budgets", hook(sideEffects="NoneOnDryRun"))
    created = core(cluster).create_namespaced_config_map(NS, config_map("c"), dry_run="All")
    assert created.metadata.name == "c"
    assert cluster.get("configmaps", "c", NS) is None
    [(_, request)] = webhook.calls
    assert request["dryRun"] is True and request["options"]["dryRun"] == ["All"]


def test_a_pod_bound_tokens_extra_reaches_the_webhook(cluster, webhook, tls):
    account = cluster.seed({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "notebook",
                                                                                       "namespace": NS}})
    pod = cluster.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jupyter-alice", "namespace": NS},
                        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})
    cluster.seed({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                  "metadata": {"name": "writer", "namespace": NS},
                  "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]})
    cluster.seed({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": {"name": "writer", "namespace": NS},
                  "subjects": [{"kind": "ServiceAccount", "name": "notebook", "namespace": NS}],
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "writer"}})
    configure(cluster, tls, "budgets", hook())

    token = cluster.token_for(service_account=f"{NS}/notebook", pod="jupyter-alice")
    core(cluster, token).create_namespaced_config_map(NS, config_map("c"))

    user = webhook.calls[0][1]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{NS}:notebook"
    assert user["uid"] == account["metadata"]["uid"]
    assert f"system:serviceaccounts:{NS}" in user["groups"]
    assert user["extra"] == {"authentication.kubernetes.io/pod-name": ["jupyter-alice"],
                             "authentication.kubernetes.io/pod-uid": [pod["metadata"]["uid"]]}
    # A token for a pod that is not there still names one (a fresh uid); a plain account token has no extra.
    core(cluster, cluster.token_for(service_account=f"{NS}/notebook", pod="gone")).create_namespaced_config_map(
        NS, config_map("d"))
    assert uuid.UUID(webhook.calls[1][1]["userInfo"]["extra"]["authentication.kubernetes.io/pod-uid"][0])
    core(cluster, cluster.token_for(service_account=f"{NS}/notebook")).create_namespaced_config_map(
        NS, config_map("e"))
    assert "extra" not in webhook.calls[2][1]["userInfo"]


def test_tls_is_verified_against_the_ca_bundle_and_the_service_name(cluster, webhook, tls):
    configure(cluster, tls, "budgets", hook(ca=tls.other_ca_bundle))
    api = core(cluster)

    code, body = refused(api.create_namespaced_config_map, NS, config_map("c"))

    assert (code, body["reason"]) == (500, "InternalError")
    assert body["message"].startswith(
        'Internal error occurred: failed calling webhook "budgets.mlplatform.io": failed to call webhook: Post '
        f'"https://{SERVICE}.{HOOKS}.svc:443/admit?timeout=10s": tls: failed to verify certificate')
    assert webhook.calls == [] and cluster.get("configmaps", "c", NS) is None
    # Without a caBundle the system roots do not know the test CA either.
    cluster.patch("validatingwebhookconfigurations", "budgets", {"webhooks": [hook(ca=None)]})
    assert "tls: failed to verify certificate" in refused(api.create_namespaced_config_map, NS, config_map("c"))[1][
        "message"]
    # The right CA, but another Service name routed to the same server: the certificate does not name it.
    cluster.route_service(HOOKS, "impostor", 443, ("127.0.0.1", webhook.port))
    wrong_name = hook(ca=tls.ca_bundle)
    wrong_name["clientConfig"]["service"]["name"] = "impostor"
    cluster.patch("validatingwebhookconfigurations", "budgets", {"webhooks": [wrong_name]})
    assert "tls: failed to verify certificate" in refused(api.create_namespaced_config_map, NS, config_map("c"))[1][
        "message"]
    # failurePolicy Ignore: the write goes on without the webhook.
    cluster.patch("validatingwebhookconfigurations", "budgets",
                  {"webhooks": [hook(ca=tls.other_ca_bundle, failurePolicy="Ignore")]})
    api.create_namespaced_config_map(NS, config_map("c"))
    assert cluster.get("configmaps", "c", NS) is not None and webhook.calls == []


def test_an_unrouted_service_has_no_endpoints(cluster, webhook, tls):
    unrouted = hook()
    unrouted["clientConfig"]["service"]["name"] = "nowhere"
    configure(cluster, tls, "budgets", unrouted)
    code, body = refused(core(cluster).create_namespaced_config_map, NS, config_map("c"))
    assert code == 500
    assert body["message"] == (
        'Internal error occurred: failed calling webhook "budgets.mlplatform.io": failed to call webhook: Post '
        f'"https://nowhere.{HOOKS}.svc:443/admit?timeout=10s": no endpoints available for service "nowhere"')


def test_an_answer_for_another_request_uid_is_a_failure(cluster, webhook, tls):
    configure(cluster, tls, "budgets", hook())
    webhook.answer = lambda request: {"uid": "not-this-one", "allowed": True}
    code, body = refused(core(cluster).create_namespaced_config_map, NS, config_map("c"))
    assert code == 500
    assert 'failed calling webhook "budgets.mlplatform.io": received invalid webhook response: ' \
           f'expected response.uid="{webhook.calls[0][1]["uid"]}", got "not-this-one"' in body["message"]
    assert cluster.get("configmaps", "c", NS) is None


def test_a_webhook_past_its_timeout_is_a_failure(cluster, webhook, tls):
    configure(cluster, tls, "budgets", hook(timeoutSeconds=1))
    webhook.answer = lambda request: webhook.release.wait(1.5) or {"allowed": True}
    started = time.monotonic()
    code, body = refused(core(cluster).create_namespaced_config_map, NS, config_map("c"))
    assert time.monotonic() - started < 5  # the 1 s timeout, not the webhook's 30 s stall (loose: CI machines are loaded)
    assert code == 500 and body["message"].endswith('/admit?timeout=1s": context deadline exceeded')
    assert cluster.get("configmaps", "c", NS) is None


def test_webhook_configurations_themselves_are_never_sent_to_webhooks(cluster, webhook, tls):
    every = hook(group="*", resources=["*/*"], operations=["*"])
    every["clientConfig"]["service"]["name"] = "nowhere"
    configure(cluster, tls, "everything", every)
    assert refused(core(cluster).create_namespaced_config_map, NS, config_map("c"))[0] == 500
    # ... yet its own configuration can still be mended (no lock-out), as on the real server.
    custom(cluster).patch_cluster_custom_object(*ADMISSION, "everything", {"webhooks": [hook(ca=tls.ca_bundle)]})
    core(cluster).create_namespaced_config_map(NS, config_map("c"))
    assert webhook.paths() == ["/admit"]


@pytest.mark.parametrize(("change", "cause"), [
    ({"sideEffects": "Some"},
     'webhooks[0].sideEffects: Unsupported value: "Some": supported values: "None", "NoneOnDryRun"'),
    ({"clientConfig": {"url": "http://hooks.example.com/admit"}},
     ("webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired "
      "format: https://host[/path]")),
    ({"clientConfig": {"url": "https://hooks.example.com/admit", "service": {"namespace": HOOKS, "name": SERVICE}}},
     "webhooks[0].clientConfig: Required value: exactly one of url or service is required"),
    ({"name": "budgets.mlplatform"},
     ('webhooks[0].name: Invalid value: "budgets.mlplatform": should be a domain with at least three segments '
      "separated by dots")),
    ({"timeoutSeconds": 31},
     "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds"),
    ({"failurePolicy": "Never"},
     'webhooks[0].failurePolicy: Unsupported value: "Never": supported values: "Fail", "Ignore"'),
    ({"admissionReviewVersions": ["v1beta2"]},
     'webhooks[0].admissionReviewVersions: Invalid value: []string{"v1beta2"}: must include at least one of v1'),
    ({"rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["READ"], "resources": ["pods"]}]},
     ('webhooks[0].rules[0].operations[0]: Unsupported value: "READ": supported values: "*", "CONNECT", '
      '"CREATE", "DELETE", "UPDATE"')),
    ({"rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["*"], "resources": ["pods"],
                 "scope": "Global"}]},
     'webhooks[0].rules[0].scope: Unsupported value: "Global": supported values: "*", "Cluster", "Namespaced"'),
])
def test_an_invalid_configuration_is_refused_naming_the_field(cluster, tls, change, cause):
    code, body = refused(configure, cluster, tls, "budgets", {**hook(), **change})
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["message"] == f'ValidatingWebhookConfiguration "budgets" is invalid: {cause}'
    assert cluster.get("validatingwebhookconfigurations", "budgets") is None


def test_an_update_to_an_invalid_configuration_is_refused_too(cluster, tls):
    configure(cluster, tls, "budgets", hook())
    duplicate = {"webhooks": [hook(), hook()]}
    code, body = refused(custom(cluster).patch_cluster_custom_object, *ADMISSION, "budgets", duplicate)
    assert code == 422 and 'webhooks[1].name: Duplicate value: "budgets.mlplatform.io"' in body["message"]
    assert len(cluster.get("validatingwebhookconfigurations", "budgets")["webhooks"]) == 1


def test_rbac_applies_to_webhook_configurations(cluster, tls):
    configure(cluster, tls, "budgets", hook())
    configure(cluster, tls, "other", hook("other"))
    cluster.seed({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ca"},
                  "rules": [{"apiGroups": ["admissionregistration.k8s.io"],
                             "resources": ["validatingwebhookconfigurations"], "resourceNames": ["budgets"],
                             "verbs": ["get", "patch"]}]})
    cluster.seed({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                  "metadata": {"name": "ca"},
                  "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": HOOKS}],
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ca"}})
    hub = custom(cluster, cluster.token_for(service_account=f"{HOOKS}/hub"))

    assert hub.get_cluster_custom_object(*ADMISSION, "budgets")["metadata"]["name"] == "budgets"
    patched = dict(hook(), clientConfig={**hook()["clientConfig"], "caBundle": tls.other_ca_bundle})
    hub.patch_cluster_custom_object(*ADMISSION, "budgets", {"webhooks": [patched]})
    assert cluster.get("validatingwebhookconfigurations", "budgets")["webhooks"][0]["clientConfig"]["caBundle"] \
        == tls.other_ca_bundle
    code, body = refused(hub.get_cluster_custom_object, *ADMISSION, "other")
    assert code == 403 and body["message"] == (
        'validatingwebhookconfigurations.admissionregistration.k8s.io "other" is forbidden: User '
        f'"system:serviceaccount:{HOOKS}:hub" cannot get resource "validatingwebhookconfigurations" in API group '
        '"admissionregistration.k8s.io" at the cluster scope')
    assert refused(hub.patch_cluster_custom_object, *ADMISSION, "other", {"metadata": {"labels": {"a": "b"}}})[0] \
        == 403
    assert refused(hub.list_cluster_custom_object, *ADMISSION)[0] == 403
