"""The real JupyterHub with CatalogKubeSpawner, against the fake API server.

The hub (a real `jupyterhub` process) renders the spawn page from the quota cache, creates the pod
in the team namespace, and shows the API server's quota refusal on the spawn page. The "kubelet"
here runs the pod's notebook container as a local process with the pod's own command and
environment, as the kubelet resolves it (the API token comes from the server's Secret, not the pod
spec), so the hub sees a server that really answers, as on a cluster. Users log in with
JupyterHub's DummyAuthenticator: the spawner is under test here, SSO is tested elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hub_config.catalog import DEFAULT_CATALOG

REPO = Path(__file__).resolve().parents[2]
VISION = "team-vision"
EXCEEDED = ('pods "jupyter-eve" is forbidden: exceeded quota: team-gpus, requested: requests.nvidia.com/gpu=2, '
            'used: requests.nvidia.com/gpu=3, limited: requests.nvidia.com/gpu=4')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HUB_CONFIG = """
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "{tmp}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "eve-pw"
c.Authenticator.allow_all = True
c.JupyterHub.load_groups = {{"team-vision": {{"users": ["eve"]}}}}
c.JupyterHub.spawner_class = "mlplatform-kubernetes"
c.CatalogKubeSpawner.catalog_file = {catalog!r}
c.CatalogKubeSpawner.port = {notebook_port}
c.CatalogKubeSpawner.cmd = ["jupyterhub-singleuser"]
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 60
"""


@pytest.fixture
def hub(fake_kube, kubeconfig, tmp_path):
    fake_kube.namespace(VISION)
    fake_kube.kubelet()
    fake_kube.seed({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "team-gpus", "namespace": VISION},
                    "spec": {"hard": {"requests.nvidia.com/gpu": "4"}}})
    port, notebook_port = free_port(), free_port()
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(HUB_CONFIG.format(
        port=port, hub_port=free_port(), proxy_api_port=free_port(), tmp=tmp_path, catalog=str(DEFAULT_CATALOG),
        chp=str(REPO / "node_modules" / ".bin" / "configurable-http-proxy"), notebook_port=notebook_port))
    log = open(tmp_path / "hub.log", "wb")
    hub = subprocess.Popen([str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config)], cwd=tmp_path,
                           env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _answers(f"{url}/hub/health"), 60, f"the hub did not start: {_tail(tmp_path / 'hub.log')}")
        yield Hub(url, notebook_port, tmp_path / "hub.log")
    finally:
        os.killpg(hub.pid, signal.SIGTERM)
        hub.wait(20)
        log.close()


class Hub:
    def __init__(self, url: str, notebook_port: int, log: Path):
        self.url, self.notebook_port, self.log = url, notebook_port, log
        self.http = requests.Session()
        # The hub's pages are UTF-8 but do not say so in Content-Type.
        self.http.hooks["response"].append(lambda r, *args, **kwargs: setattr(r, "encoding", "utf-8"))
        self.notebooks: list[subprocess.Popen] = []

    @property
    def xsrf(self) -> str | None:
        return self.http.cookies.get("_xsrf", path="/hub/") or self.http.cookies.get("_xsrf")

    def login(self, user: str, password: str) -> requests.Response:
        self.http.get(f"{self.url}/hub/login")
        return self.http.post(f"{self.url}/hub/login", data={"username": user, "password": password,
                                                            "_xsrf": self.xsrf})

    def spawn(self, choice: str, gpu: str | None = None) -> requests.Response:
        team, profile = choice.split("/")
        data = {"profile": choice, "_xsrf": self.xsrf}
        if gpu:
            data[f"gpu--{team}--{profile}"] = gpu
        return self.http.post(f"{self.url}/hub/spawn", data=data)

    def api(self, method: str, path: str) -> requests.Response:
        return self.http.request(method, f"{self.url}/hub/api{path}", headers={"X-XSRFToken": self.xsrf})

    def run_container(self, pod: dict, env: dict[str, str]) -> None:
        """The kubelet's part: run the notebook container of `pod` here, with its command and `env` (the
        container's environment as the kubelet resolves it, Secret references included)."""
        container = next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")
        home = self.log.parent / "home"
        home.mkdir(exist_ok=True)
        command = [str(Path(sys.executable).parent / container["args"][0]), *container["args"][1:]]
        command += ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []
        self.notebooks.append(subprocess.Popen(
            command, cwd=home, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={"PATH": os.environ["PATH"], "HOME": str(home), **env, "JUPYTERHUB_SERVICE_URL":
                 f"http://127.0.0.1:{self.notebook_port}{env['JUPYTERHUB_SERVICE_PREFIX']}"}))


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def _wait(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(message)


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def test_quota_refusal_is_shown_on_the_spawn_page_and_a_cpu_server_then_starts(hub, fake_kube):
    form = hub.login("eve", "eve-pw")
    assert form.url.endswith("/hub/spawn"), _tail(hub.log)
    assert "A100 ×2 — 4 of 4 team-vision A100 free" in form.text
    # The first page started the cache: one list + one watch of quotas and of GPU pods, for the whole hub.
    _wait(lambda: fake_kube.count("watch", "resourcequotas") and fake_kube.count("watch", "pods"), 10, "no watch")
    fake_kube.clear_requests()
    assert "A100 ×2 — 4 of 4 team-vision A100 free" in hub.http.get(f"{hub.url}/hub/spawn").text
    assert [r for r in fake_kube.requests if r.verb != "watch"] == []  # the page came from the cache

    # Another workload took GPUs the cache has not seen yet: the API server's quota admission refuses.
    fake_kube.fail("create", "pods", 403, EXCEEDED)
    refused = hub.spawn(f"{VISION}/gpu-a100", "a100:2")
    assert refused.status_code != 500
    message = ("Cannot start your server with 2 GPUs: team team-vision's quota in namespace team-vision is used up "
               "(exceeded quota: team-gpus, requested: requests.nvidia.com/gpu=2, used: requests.nvidia.com/gpu=3, "
               "limited: requests.nvidia.com/gpu=4)")
    if refused.url.endswith("/hub/spawn"):  # failed within the hub's first second: the form again
        assert refused.status_code == 409 and message.replace("'", "&#39;") in refused.text
    else:  # else the spawn-pending page's progress stream says it
        progress = hub.http.get(f"{hub.url}/hub/api/users/eve/server/progress", stream=True, timeout=30)
        assert message in progress.text
    assert fake_kube.list("pods", VISION) == []
    assert _wait(lambda: not hub.api("GET", "/users/eve").json()["servers"], 20, "the failed server stayed")
    assert fake_kube.list("secrets", VISION) == []  # nor its token Secret

    # The refusal does not stick: a CPU server starts, in the team namespace, and answers.
    started = hub.spawn(f"{VISION}/cpu")
    assert started.status_code in (200, 302), started.text[:500]
    pod = _wait(lambda: fake_kube.get("pods", "jupyter-eve", VISION), 30, f"no pod: {_tail(hub.log)}")
    assert "nvidia.com/gpu" not in str(pod["spec"]["containers"][0].get("resources"))
    # The server's API token is not in the pod spec: the kubelet reads it from the server's Secret.
    env = fake_kube.container_env(pod, "notebook")
    pod_token = env["JUPYTERHUB_API_TOKEN"]
    assert pod_token and pod_token not in json.dumps(pod)
    assert fake_kube.get("secrets", "jupyter-eve-api-token", VISION) is not None
    hub.run_container(pod, env)
    _wait(lambda: hub.api("GET", "/users/eve").json()["servers"].get("", {}).get("ready"), 60,
          f"the server did not become ready: {_tail(hub.log)}")
    lab = hub.http.get(f"{hub.url}/user/eve/lab")  # through the proxy and the server's OAuth with the hub
    assert lab.status_code == 200 and lab.url == f"{hub.url}/user/eve/lab" and "JupyterLab" in lab.text

    # Stop: the hub deletes the pod.
    assert hub.api("DELETE", "/users/eve/server").status_code in (202, 204)
    _wait(lambda: fake_kube.get("pods", "jupyter-eve", VISION) is None, 30, "the pod was not deleted")
    _wait(lambda: fake_kube.list("secrets", VISION) == [], 10, "the server's token Secret was not deleted")
    for notebook in hub.notebooks:
        os.killpg(notebook.pid, signal.SIGTERM)
        notebook.wait(10)
    log = hub.log.read_text()
    assert "exceeded quota" in log
    # KubeSpawner would log the refused pod whole, with the server's API token in its environment.
    assert "JUPYTERHUB_API_TOKEN" not in log and pod_token not in log
