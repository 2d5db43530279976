"""Workloads in the cluster reach MLflow's access control with service-account tokens projected for it
(RayService replicas read the team's models, Spark jobs write to its workspace).

A real MLflow tracking server with the auth app and the platform's authorization function, set up as
`mlplatform render` describes for the example cluster (auth.ini with the cluster's issuer, team
namespaces and the serving account), and the catalog's teams provisioned as the hub does. The
cluster's service-account issuer is a key pair of this test (no cluster here), its keys published
as a JWKS document; the tokens are shaped as the kubelet projects them (`kubernetes.io` claims).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from mlplatform_core.catalog import load_catalog

from hub_config.mlflow_access.provisioning import TeamProvisioner
from hub_config.mlflow_access.tokens import TokenSigner, generate_key_pair
from hub_config.render.mlflow import PUBLIC_KEY_FILE, mlflow_auth_config_map

from ..conftest import BASE
from ..support.authz import authorization_matrix

PORT = BASE + 560
ISSUER = "https://oidc.example.test/id/cluster"
CATALOG_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "helm-values", "platform.yaml")


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture(scope="module")
def cluster_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(tmp_path_factory, cluster_key):
    """The cluster issuer's public keys, served over HTTP as an issuer publishes them."""
    keys = tmp_path_factory.mktemp("issuer")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(cluster_key.public_key()))
    (keys / "keys").write_text(json.dumps({"keys": [{**jwk, "kid": "cluster-1", "alg": "RS256", "use": "sig"}]}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(keys)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/keys"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory, jwks_url):
    """MLflow as rendered for the example cluster, at a local port, its teams provisioned; yields its URL."""
    home = tmp_path_factory.mktemp("mlflow-workloads")
    generate_key_pair(home / "hub.pem", home / "hub.pub.pem")
    url = f"http://127.0.0.1:{PORT}"
    catalog = load_catalog(CATALOG_FILE, environ={})
    catalog = catalog.model_copy(update={
        "mlflow": catalog.mlflow.model_copy(update={"tracking_uri": url, "team_artifact_root": None}),
        "kubernetes": catalog.kubernetes.model_copy(update={"service_account_issuer": ISSUER,
                                                            "service_account_jwks_url": jwks_url})})
    # What render writes, with this machine's paths for the stores and the hub's public key.
    ini = (mlflow_auth_config_map(catalog)["data"]["auth.ini"]
           .replace(catalog.mlflow.access.auth_database_uri, f"sqlite:///{home / 'auth.db'}")
           .replace(PUBLIC_KEY_FILE, str(home / "hub.pub.pem")))
    (home / "auth.ini").write_text(ini)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
           "MLFLOW_AUTH_CONFIG_PATH": str(home / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": uuid.uuid4().hex,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex, "MLFLOW_RBAC_SEED_DEFAULT_ROLES": "false",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(home / "mlflow.log", "wb")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--host", "127.0.0.1",
                             "--port", str(PORT), "--workers", "1", "--backend-store-uri",
                             f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts"),
                             "--app-name", "basic-auth", "--enable-workspaces"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (home / "mlflow.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail(f"MLflow did not answer within 120 s:\n{(home / 'mlflow.log').read_text()[-3000:]}")
        hub = TokenSigner(home / "hub.pem")
        provisioner = TeamProvisioner(hub)
        for team in catalog.teams:
            provisioner.ensure_team(catalog, team)
        platform = {"Authorization": f"Bearer {hub.platform_token()}", "X-MLFLOW-WORKSPACE": "team-vision"}
        created = requests.post(f"{url}/api/2.0/mlflow/registered-models/create", json={"name": "iris"},
                                headers=platform, timeout=30)
        assert created.status_code == 200, created.text
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def service_account_token(key, namespace: str, account: str, *, audience: str = "mlflow", issuer: str = ISSUER,
                          lifetime: int = 3600) -> str:
    """A token as the kubelet projects it for a pod of `account` in `namespace`."""
    now = int(time.time())
    claims = {"iss": issuer, "aud": [audience], "sub": f"system:serviceaccount:{namespace}:{account}", "iat": now,
              "nbf": now, "exp": now + lifetime,
              "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
                                "pod": {"name": "iris-raycluster-worker", "uid": str(uuid.uuid4())}}}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "cluster-1"})


def call(url: str, token: str, action: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", "X-MLFLOW-WORKSPACE": "team-vision"}
    api = f"{url}/api/2.0/mlflow/registered-models"
    if action == "read team-vision's model":
        return requests.get(f"{api}/get", params={"name": "iris"}, headers=headers, timeout=30)
    return requests.post(f"{api}/set-tag", json={"name": "iris", "key": "k", "value": "v"}, headers=headers, timeout=30)


def test_a_teams_serving_pods_read_its_models_and_change_nothing(mlflow, cluster_key, authz):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    actors = {
        "team-vision's serving pod": (service_account_token(cluster_key, "team-vision", "mlplatform-serving"), 200, 403),
        # A serving account gets its own team's models only, whatever other teams' users may read.
        "team-nlp's serving pod": (service_account_token(cluster_key, "team-nlp", "mlplatform-serving"), 403, 403),
        # Spark jobs log runs and register models: the team's members role.
        "team-vision's Spark driver": (service_account_token(cluster_key, "team-vision", "mlplatform-spark"), 200, 200),
        "team-vision's notebook account (not listed)": (
            service_account_token(cluster_key, "team-vision", "mlplatform-notebook"), 401, 401),
        "a pod of another namespace": (service_account_token(cluster_key, "default", "mlplatform-serving"), 401, 401),
        "a token for the API server (audience)": (
            service_account_token(cluster_key, "team-vision", "mlplatform-serving", audience="https://kubernetes.default.svc"),
            401, 401),
        "a token of another cluster's key": (service_account_token(other_key, "team-vision", "mlplatform-serving"),
                                             401, 401),
        "an expired token": (service_account_token(cluster_key, "team-vision", "mlplatform-serving", lifetime=-60),
                             401, 401),
    }
    for actor, (token, read, write) in actors.items():
        for action, want in (("read team-vision's model", read), ("tag team-vision's model", write)):
            response = call(mlflow, token, action)
            authz.check(actor, action, response, allowed=want == 200, status=want)
            if want == 401:
                assert response.text.startswith("invalid MLflow token") and token not in response.text
