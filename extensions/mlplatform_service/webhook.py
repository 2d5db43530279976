"""The service's admission webhook on Kubernetes: HTTPS for the API server, answering with workloads.py.

The API server calls webhooks over TLS only, trusting the configuration's `caBundle`. As the Spark
operator's webhook does, the service makes its own: a CA and a serving certificate for the hub
Service's names (`hub.<namespace>.svc`), new at every start, kept in memory only; it then puts the CA
into the ValidatingWebhookConfiguration that render wrote without one, and puts it back whenever the
configuration is applied again (every `CA_CHECK_SECONDS`). Until then the API server cannot call the
webhook, and its failurePolicy Fail refuses the writes: fail closed, like the budget at spawn. The
hub's service account may get and patch that one configuration only (render's ClusterRole).

Who sends a request: the API server authenticated it and says so in `userInfo`. A notebook's
service-account token is bound to its pod (`authentication.kubernetes.io/pod-name`, `pod-uid`): the
pod, read here, names its hub user (KubeSpawner's annotation). Anything else acts under its
Kubernetes name.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tornado import httpserver, web

from .workloads import Actor, WorkloadAdmission

log = logging.getLogger("mlplatform_service.webhook")

PATH = "/validate-workloads"  # render's clientConfig.service.path
CA_CHECK_SECONDS = 30
POD_NAME, POD_UID = "authentication.kubernetes.io/pod-name", "authentication.kubernetes.io/pod-uid"
HUB_USER = "hub.jupyter.org/username"  # KubeSpawner's annotation of a server's pod
MAX_BODY = 3 * 1024 * 1024  # the API server's own limit on an object (etcd's 1.5 MiB) with room for the old one


def make_certificates(hosts: list[str], days: int = 365) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, serving certificate, serving key), PEM: a fresh CA that signs one certificate for `hosts`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlplatform admission webhook CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def ssl_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as private:  # load_cert_chain reads files; they live milliseconds
        cert, key = Path(private, "tls.crt"), Path(private, "tls.key")
        cert.write_bytes(cert_pem)
        key.touch(0o600)
        key.write_bytes(key_pem)
        context.load_cert_chain(cert, key)
    return context


class Kubernetes:
    """The service's own API client (the hub pod's service account; a kubeconfig outside a cluster)."""

    def __init__(self, kubeconfig: str | None = None):
        self.kubeconfig = kubeconfig  # None: $KUBECONFIG, else the pod's service account
        self._client = None

    async def client(self):
        if self._client is None:
            from kubernetes_asyncio import client, config

            configuration = client.Configuration()
            # A kubeconfig when one is named (a hub outside a cluster, the tests), else the pod's service account.
            if self.kubeconfig is None and not os.environ.get("KUBECONFIG") \
                    and Path(config.incluster_config.SERVICE_TOKEN_FILENAME).exists():
                config.load_incluster_config(client_configuration=configuration)
            else:
                await config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
            self._client = client.ApiClient(configuration)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def pod(self, namespace: str, name: str) -> dict | None:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            pod = await client.CoreV1Api(await self.client()).read_namespaced_pod(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return {"uid": pod.metadata.uid, "annotations": pod.metadata.annotations or {}}

    async def ensure_ca_bundle(self, configuration: str, ca_pem: bytes) -> bool:
        """Put `ca_pem` into every webhook of `configuration`; True when it had to change."""
        from kubernetes_asyncio import client

        api = client.AdmissionregistrationV1Api(await self.client())
        current = await api.read_validating_webhook_configuration(configuration)
        wanted = base64.b64encode(ca_pem).decode()
        patch = [{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wanted}
                 for i, hook in enumerate(current.webhooks or []) if hook.client_config.ca_bundle != wanted]
        if patch:
            await api.patch_validating_webhook_configuration(configuration, patch)
        return bool(patch)


class WebhookHandler(web.RequestHandler):
    """POST an AdmissionReview (admission.k8s.io/v1); answers one with the `response`."""

    def initialize(self, admission: WorkloadAdmission, kubernetes: Kubernetes):
        self.admission, self.kubernetes = admission, kubernetes

    def check_xsrf_cookie(self):  # the API server posts JSON, no browser is involved
        pass

    async def post(self):
        try:
            review = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON: an admission.k8s.io/v1 AdmissionReview") from None
        request = review.get("request") if isinstance(review, dict) else None
        if not (isinstance(review, dict) and review.get("apiVersion") == "admission.k8s.io/v1"
                and review.get("kind") == "AdmissionReview" and isinstance(request, dict)):
            raise web.HTTPError(400, "the body is not an admission.k8s.io/v1 AdmissionReview with a request")
        problem = _shape_problem(request)
        if problem:
            raise web.HTTPError(400, f"AdmissionReview request.{problem}")
        actor = await self.actor(request["userInfo"])
        try:
            response = await asyncio.to_thread(self.admission.decide, request, actor)
        except (AttributeError, TypeError, ValueError, ArithmeticError) as e:  # an object no API server would send
            raise web.HTTPError(400, f"AdmissionReview request: its objects are not Kubernetes objects ({e})") from None
        if not response["allowed"]:
            log.info("refused %s %s %s/%s for %s: %s", request.get("operation"), (request.get("resource") or {})
                     .get("resource"), request.get("namespace"), request.get("name"), actor.name,
                     response["status"]["message"])
        self.finish({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})

    async def actor(self, user_info: Mapping) -> Actor:
        """The hub user of the notebook pod a bound service-account token belongs to; else the Kubernetes user."""
        username = str(user_info.get("username") or "")
        extra = user_info.get("extra") or {}
        pod_name, pod_uid = (extra.get(POD_NAME) or [None])[0], (extra.get(POD_UID) or [None])[0]
        parts = username.split(":")
        if pod_name and len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            pod = await self.kubernetes.pod(parts[2], pod_name)
            if pod is not None and pod["uid"] == pod_uid and pod["annotations"].get(HUB_USER):
                return Actor(pod["annotations"][HUB_USER], hub_user=True)
        return Actor(username or "system:anonymous", hub_user=False)

    def write_error(self, status_code: int, **kwargs):
        error = kwargs.get("exc_info", (None, None))[1]
        message = error.log_message if isinstance(error, web.HTTPError) and error.log_message else self._reason
        self.finish({"status": status_code, "message": message})


# The fields decide() reads, with the types the API server sends.
_SHAPE = {"uid": (str,), "operation": (str,), "name": (str, type(None)), "namespace": (str, type(None)),
          "subResource": (str, type(None)), "resource": (dict,), "userInfo": (dict,), "object": (dict, type(None)),
          "oldObject": (dict, type(None)), "dryRun": (bool, type(None))}


def _shape_problem(request: Mapping) -> str | None:
    for field, types in _SHAPE.items():
        value = request.get(field)
        if field in ("uid", "operation", "resource", "userInfo") and value is None:
            return f"{field}: missing; allowed: {types[0].__name__}"
        if not isinstance(value, types):
            return f"{field}: {type(value).__name__} is not allowed; allowed: {' or '.join(t.__name__ for t in types)}"
    extra = request["userInfo"].get("extra") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, list) and all(isinstance(i, str) for i in v)
                                              for v in extra.values()):
        return "userInfo.extra: allowed: a map of string lists"
    for field in ("object", "oldObject"):
        obj = request.get(field) or {}
        if not all(isinstance(obj.get(part) or {}, dict) for part in ("metadata", "spec", "status")):
            return f"{field}: metadata, spec and status must be objects"
    return None


def start_webhook(admission: WorkloadAdmission, *, bind: str, hosts: list[str], configuration: str,
                  kubeconfig: str | None = None) -> tuple[httpserver.HTTPServer, asyncio.Future]:
    """Listen on `bind` (host:port) with a certificate for `hosts`; keep `configuration`'s caBundle ours.
    Returns the server and the task keeping the CA (to stop them)."""
    ca_pem, cert_pem, key_pem = make_certificates(hosts)
    kubernetes = Kubernetes(kubeconfig)
    app = web.Application([(PATH, WebhookHandler, {"admission": admission, "kubernetes": kubernetes})])
    host, _, port = bind.rpartition(":")
    server = httpserver.HTTPServer(app, ssl_options=ssl_context(cert_pem, key_pem), max_body_size=MAX_BODY)
    server.listen(int(port), host or None)
    log.info("admission webhook on https://%s%s for %s", bind, PATH, ", ".join(hosts))

    async def keep_ca_bundle():
        try:
            while True:
                try:
                    if await kubernetes.ensure_ca_bundle(configuration, ca_pem):
                        log.info("admission webhook: CA bundle of %s set", configuration)
                except Exception as e:  # not applied yet, the API server away: the next round tries again
                    log.warning("admission webhook: could not set the CA bundle of %s: %s", configuration, e)
                await asyncio.sleep(CA_CHECK_SECONDS)
        finally:  # stopped (tests): the client's connections go with it
            await kubernetes.close()

    return server, asyncio.ensure_future(keep_ca_bundle())
