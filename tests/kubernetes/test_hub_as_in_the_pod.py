"""The hub started exactly as z2jh's hub pod starts it, from what `helm install` with the rendered values
would create: the chart's own files/hub/jupyterhub_config.py and z2jh.py from the rendered ConfigMap, the
values from the rendered Secret, the project's `hub.extraConfig`, the Deployment's command, environment and
mounts (tests/support/pod_runner.py binds them at their paths in a mount namespace), the hub's service
account against the fake API server (its RBAC is the chart's Role plus what render adds), the proxy started
from the chart's proxy Deployment, and the dev OIDC provider. A user logs in, sees the GPU-aware spawn form,
starts a GPU profile; the pod arrives in the team namespace as the platform defines it; the notebook
container runs and answers through the proxy; the user stops it. The platform service runs as the hub's
managed service in the pod, with its database where the catalog's default puts it (SQLite on the hub's
volume), and answers through the proxy and at the URL servers get. The hub runs from a venv of what the hub
image installs and nothing else (images/hub: the `hub` extra, not editable, tests/support/image_venv.py).

Differences from a cluster, each where nothing else is possible here: the API server is reached with a
kubeconfig holding the hub service account's token (the fake serves plain HTTP, in-cluster config wants
HTTPS); the proxy listens on free ports (8000 is often taken here), which its Services' variables say; the
processes run as root (the notebook from this checkout's venv); MLflow is the session's local MLflow (the hub provisions
the team's workspace there with the signing key mounted from the Secret, as in the cluster).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import pytest
import requests
import yaml

from mlplatform_core.catalog import parse_catalog
from hub_config.local.platform import HERE as LOCAL_PLATFORM, REALM_FILE
from hub_config.render.build import render
from hub_config.render.pod_security import baseline_problems
from hub_config.render.workload_webhook import WEBHOOK_CONFIGURATION, WEBHOOK_PORT
from mlplatform.serving.spec import ray_service, serving_request

from ..support.hub import PASSWORDS, UserSession
from ..support.image_venv import build_context, install_extra
from ..support.pod_runner import PodRunner
from ..support.rendered_cluster import CHARTS, chart_objects, load_rendered_cluster
from .test_hub_on_kubernetes import _answers, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "helm-values" / "platform.yaml"
BIN = Path(sys.executable).parent
HUB_PORT = 8081  # where z2jh's jupyterhub_config.py binds the hub (hub_container_port), as its Service says
SERVICE_PORT = 10101  # the platform service in the hub pod (hub_config/render/jupyterhub.py), on the hub Service
POD_IP = "127.0.0.2"  # the user pod's address (loopback: the pod listens on this machine)
VISION = "team-vision"


def wait(predicate, timeout: float, message):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.3)
    raise AssertionError(message() if callable(message) else message)


def pod_of(deployment: dict) -> dict:
    """The pod the Deployment's ReplicaSet would create."""
    template = deployment["spec"]["template"]
    meta = deployment["metadata"]
    return {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
            "metadata": {"name": f"{meta['name']}-0", "namespace": meta["namespace"], "labels": template["metadata"]["labels"]}}


class Cluster:
    def __init__(self, tmp_path: Path, fake, runner: PodRunner, public_url: str, catalog):
        self.tmp, self.fake, self.runner, self.public_url, self.catalog = tmp_path, fake, runner, public_url, catalog

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str, n: int = 40) -> str:
        return "\n".join(self.log(name).splitlines()[-n:])


@pytest.fixture(scope="module")
def hub_image(tmp_path_factory):
    """The bin/ of the hub image's Python: images/hub's `hub` extra alone, installed as its Dockerfile does."""
    base = tmp_path_factory.mktemp("hub-image")
    venv = install_extra("hub", build_context(base / "src"), base / "venv")
    yield venv / "bin"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster(platform, fake_kube, tmp_path, hub_image):
    for port, what in ((HUB_PORT, "the chart's hub"), (SERVICE_PORT, "the platform service"),
                       (WEBHOOK_PORT, "the platform service's admission webhook")):
        if not _port_free(port):
            pytest.fail(f"port {port} is taken: {what} listens there")
    sso_port, proxy_api_port, public_port = free_port(), free_port(), free_port()
    public_url = f"http://localhost:{public_port}"
    data = yaml.safe_load(EXAMPLE.read_text())
    data["sso"]["realm_url"] = f"http://127.0.0.1:{sso_port}/realms/platform"
    data["kubernetes"]["public_url"] = public_url
    data["mlflow"]["tracking_uri"] = platform.mlflow_url
    catalog = parse_catalog(data, str(EXAMPLE), environ={})
    render(catalog, charts=CHARTS)  # what `mlplatform render --<chart>-chart` checks before helm install
    charts = chart_objects(catalog)
    load_rendered_cluster(fake_kube, catalog, charts)  # kubectl apply of render's output, helm install of the charts
    hub_ns = catalog.kubernetes.hub_namespace
    client_secret = secrets.token_urlsafe(24)
    fake_kube.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlplatform-hub", "namespace": hub_ns},
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in {
                        "oauth-client-secret": client_secret,
                        "mlflow-signing-key": platform.mlflow_signing_key().read_text()}.items()}})
    fake_kube.kubelet(pod_ip=POD_IP)
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "kubeconfig",
                                            token=fake_kube.token_for(service_account=f"{hub_ns}/hub"))
    runner = PodRunner(fake_kube, tmp_path, {hub_ns: {"hub": HUB_PORT, "proxy-api": proxy_api_port,
                                                      "proxy-public": public_port}})
    sso = subprocess.Popen(["node", str(LOCAL_PLATFORM / "sso_provider.mjs")], stdout=(tmp_path / "sso.log").open("wb"),
                           stderr=subprocess.STDOUT, start_new_session=True, env={
                               "PATH": os.environ["PATH"], "SSO_HOST": "127.0.0.1", "SSO_PORT": str(sso_port),
                               "SSO_REALM_FILE": str(REALM_FILE), "SSO_HUB_URL": public_url,
                               "SSO_CLIENT_SECRET": client_secret, "SSO_STATE_DIR": str(tmp_path / "sso"),
                               "SSO_ACCESS_TOKEN_TTL": "300", "SSO_ID_TOKEN_TTL": "300"})
    home = tmp_path / "home"
    home.mkdir()
    node = Path(shutil.which("node")).parent
    proxy_image = {"PATH": f"{ROOT / 'node_modules' / '.bin'}:{node}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}
    deployments = {o["metadata"]["name"]: o for o in charts["jupyterhub"] if o["kind"] == "Deployment"}
    result = Cluster(tmp_path, fake_kube, runner, public_url, catalog)
    try:
        wait(lambda: _answers(f"{catalog.sso.realm_url}/.well-known/openid-configuration"), 30,
             lambda: f"the OIDC provider did not start: {result.tail('sso')}")
        proxy = pod_of(deployments["proxy"])
        [chp] = proxy["spec"]["containers"]
        ports = {"--port=8000": f"--port={public_port}", "--api-port=8001": f"--api-port={proxy_api_port}"}
        runner.run(proxy, "chp", tmp_path / "proxy.log", env=proxy_image,
                   args=[*chp["command"], *(ports.get(arg, arg) for arg in chp["args"])])
        runner.run(pod_of(deployments["hub"]), "hub", tmp_path / "hub.log", workdir="/srv/jupyterhub",
                   env={"PATH": f"{hub_image}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
                        "KUBECONFIG": str(kubeconfig)})
        wait(lambda: _answers(f"{public_url}/hub/health"), 90, lambda: f"the hub did not start:\n{result.tail('hub')}")
        yield result
    finally:
        runner.close()
        os.killpg(sso.pid, 15)
        sso.wait(10)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_the_chart_started_hub_logs_in_spawns_a_gpu_server_in_the_team_namespace_and_stops_it(cluster):
    hub_log = cluster.log("hub")
    # The chart's config ran, then ours: no trait of ours was overwritten after hub.extraConfig.
    for line in ("Loading /usr/local/etc/jupyterhub/secret/values.yaml", "Loading pass-through config section "
                 "hub.config.KeycloakOAuthenticator", "Loading extra config: mlplatform"):
        assert line in hub_log, cluster.tail("hub")
    alice = UserSession(cluster.public_url, "alice")
    form = alice.login(PASSWORDS["alice"])
    assert form.status_code == 200 and form.url == f"{cluster.public_url}/hub/spawn", (form.url, cluster.tail("hub"))
    assert "A100 ×1 — 4 of 4 team-vision A100 free" in form.text, form.text[-3000:]
    assert "T4 ×2 — 2 of 2 team-vision T4 free" in form.text

    started = alice.submit_spawn_form({"profile": f"{VISION}/gpu-a100", f"gpu--{VISION}--gpu-a100": "a100:1"})
    assert started.status_code == 302, (started.status_code, started.text[:500], cluster.tail("hub"))
    pod = wait(lambda: cluster.fake.get("pods", "jupyter-alice", VISION), 60,
               lambda: f"no pod in {VISION}:\n{cluster.tail('hub')}")
    spec = pod["spec"]
    [notebook] = [c for c in spec["containers"] if c["name"] == "notebook"]
    assert notebook["image"] == "registry.example.org/mlplatform/notebook-gpu:0.1.0"
    assert notebook["resources"]["limits"]["nvidia.com/gpu"] == notebook["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["serviceAccountName"] == "mlplatform-notebook"
    # z2jh's config makes its user scheduler place user pods; ours run in the team namespaces, which it serves too.
    assert spec["schedulerName"] == "jupyterhub-user-scheduler"
    assert pod["metadata"]["labels"].items() >= {"component": "singleuser-server", "app.kubernetes.io/managed-by":
                                                 "kubespawner", "hub.jupyter.org/network-access-hub": "true"}.items()
    # The team's catalog ConfigMap (CatalogKubeSpawner) and the user's home on a PVC in the team namespace
    # (z2jh's singleuser.storage, dynamic by default; the hub's Role there covers PVCs).
    assert {(m["name"], m["mountPath"]) for m in notebook["volumeMounts"]} >= {
        ("mlplatform", "/etc/mlplatform"), ("volume-alice", "/home/jovyan")}
    assert cluster.fake.get("persistentvolumeclaims", "claim-alice", VISION) is not None
    env = cluster.fake.container_env(pod, "notebook")
    assert env["MLPLATFORM_CATALOG"] == "/etc/mlplatform/platform.yaml"
    assert env["MLFLOW_TRACKING_URI"] == cluster.catalog.mlflow.tracking_uri and env["MLFLOW_WORKSPACE"] == VISION
    assert env["JUPYTERHUB_API_URL"] == "http://hub.jupyterhub.svc:8081/hub/api"
    assert baseline_problems(pod) == []

    # The kubelet runs the notebook container: it reaches the hub by the Service's name, the hub reaches it.
    service_url = env["JUPYTERHUB_SERVICE_URL"].replace("0.0.0.0", POD_IP)
    cluster.runner.run(pod, "notebook", cluster.tmp / "notebook.log", workdir=str(cluster.tmp / "home"), env={
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(cluster.tmp / "home"),
        "JUPYTERHUB_SERVICE_URL": service_url},
        args=[*notebook.get("command", []), *notebook.get("args", []), "--ServerApp.allow_root=True"])
    wait(lambda: alice.model()["servers"].get("", {}).get("ready"), 90,
         lambda: f"the server did not become ready:\n{cluster.tail('hub')}\n{cluster.tail('notebook')}")
    lab = alice.http.get(f"{cluster.public_url}/user/alice/lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text, (lab.url, cluster.tail("notebook"))

    assert alice.api("DELETE", "/users/alice/server").status_code in (202, 204)
    wait(lambda: cluster.fake.get("pods", "jupyter-alice", VISION) is None, 60, "the pod was not deleted")
    wait(lambda: cluster.fake.list("secrets", VISION) == [], 20, "the server's token Secret was not deleted")
    assert cluster.fake.get("persistentvolumeclaims", "claim-alice", VISION) is not None  # the home stays
    # The chart's idle culler runs as the hub's service, with the chart's own role.
    assert "Starting managed service jupyterhub-idle-culler" in cluster.log("hub")
    # With the catalog's per-profile hook (hub_config/culling.py), and allowed to list users and servers' state.
    assert "idle_culler_config.py" in cluster.log("hub")
    assert "200 GET /hub/api/users?state=[secret] (jupyterhub-idle-culler@" in cluster.log("hub"), cluster.tail("hub", 80)
    # The platform service runs beside the hub (hub_config/render/jupyterhub.py).
    _the_platform_service_answers(cluster, alice, env)
    _the_admission_webhook_admits_the_teams_workloads(cluster)
    assert "Traceback" not in cluster.log("hub"), cluster.tail("hub", 80)



def _the_platform_service_answers(cluster, alice: UserSession, server_env: dict[str, str]) -> None:
    """As rendered: a managed service of the hub, listening on all interfaces of the pod at the hub Service's
    extra port, which the proxy routes /services/mlplatform/ to by the Service's name."""
    hub_log = cluster.log("hub")
    assert "Loading extra config: mlplatform-service" in hub_log and "Starting managed service mlplatform" in hub_log
    audit = f"{cluster.public_url}/services/mlplatform/api/audit"
    wait(lambda: requests.get(audit, timeout=5).status_code == 403, 60,
         lambda: f"the platform service did not answer through the proxy:\n{cluster.tail('hub', 80)}")
    assert "hub token" in requests.get(audit, timeout=5).json()["message"]  # no token, no audit log
    admin = UserSession(cluster.public_url, "admin")
    admin.login(PASSWORDS["admin"])
    admin_token = {"Authorization": f"token {admin.new_token()}"}
    r = requests.get(audit, headers=admin_token, timeout=10)
    assert r.status_code == 200 and isinstance(r.json()["records"], list), (r.status_code, r.text, cluster.tail("hub"))
    r = requests.get(audit, headers={"Authorization": f"token {alice.new_token()}"}, timeout=10)
    assert r.status_code == 403, (r.status_code, r.text)  # the audit log is for admins

    # Servers (in the team namespaces) reach it directly at the Service's name with its namespace, which the
    # pods' cluster DNS (/etc/hosts here) resolves to where the hub pod listens.
    assert server_env["MLPLATFORM_SERVICE_URL"] == f"http://hub.jupyterhub.svc:{SERVICE_PORT}/services/mlplatform"
    direct = server_env["MLPLATFORM_SERVICE_URL"].replace("hub.jupyterhub.svc", "127.0.0.1") + "/api/audit"
    assert requests.get(direct, headers=admin_token, timeout=10).status_code == 200
    # Its database: the catalog's default, SQLite on the hub's volume (the PVC at /srv/jupyterhub).
    assert cluster.catalog.platform_service.database_url == "sqlite:////srv/jupyterhub/mlplatform.sqlite"
    assert (cluster.tmp / "volumes" / "hub-0" / "pvc" / "mlplatform.sqlite").stat().st_size > 0


def _the_admission_webhook_admits_the_teams_workloads(cluster) -> None:
    """The service's webhook listens in the pod on the hub Service's extra port; with the hub's service account it
    puts its CA into the rendered configuration, so the API server (the fake, reaching the Service here) admits a
    RayService through it, and the service audits the deploy."""
    fake, hub_ns = cluster.fake, cluster.catalog.kubernetes.hub_namespace
    configuration = wait(lambda: (lambda c: c if c and all(h["clientConfig"].get("caBundle") for h in c["webhooks"])
                                  else None)(fake.get("validatingwebhookconfigurations", WEBHOOK_CONFIGURATION)), 60,
                         lambda: f"the service did not put its CA into the webhook configuration:\n{cluster.tail('hub')}")
    assert configuration["webhooks"][0]["clientConfig"]["service"] == {
        "namespace": hub_ns, "name": "hub", "port": WEBHOOK_PORT, "path": "/validate-workloads"}
    fake.route_service(hub_ns, "hub", WEBHOOK_PORT, ("127.0.0.1", WEBHOOK_PORT))
    k8s = cluster.catalog.kubernetes
    token = fake.token_for(service_account=f"{VISION}/{k8s.service_account}")
    api = kubernetes.client.ApiClient(kubernetes.client.Configuration(
        host=fake.url, api_key={"authorization": f"Bearer {token}"}))
    body = ray_service(serving_request(name="iris", model_uri="models:/iris/1"), namespace=VISION, model_version="1",
                       image=k8s.images.serving, service_account=k8s.serving_service_account, mlflow_token=True)
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object("ray.io", "v1", VISION, "rayservices", body)
    admin = UserSession(cluster.public_url, "admin")
    admin.login(PASSWORDS["admin"])
    records = requests.get(f"{cluster.public_url}/services/mlplatform/api/audit?action=deploy",
                           headers={"Authorization": f"token {admin.new_token()}"}, timeout=10).json()["records"]
    assert [(r["target"], r["outcome"], r["actor"]) for r in records] == [
        (f"model:{VISION}/iris", "admitted", f"system:serviceaccount:{VISION}:{k8s.service_account}")]
