"""What `mlplatform render` says about MLflow's access control for a cluster: the hub's signing key
mounted from its Secret and configured, and the tracking server's auth.ini."""

import configparser
from pathlib import Path

from mlplatform_core.catalog import load_catalog

from hub_config.render.build import documents
from hub_config.render.jupyterhub import jupyterhub_values

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})


def test_the_hub_signs_with_the_key_of_its_secret():
    hub = jupyterhub_values(CATALOG)["hub"]
    assert hub["config"]["MlflowAccess"] == {"signing_key_file": "/etc/mlplatform/mlflow/signing.pem"}
    assert hub["extraVolumes"] == [{"name": "mlflow-signing-key", "secret": {
        "secretName": "mlplatform-hub", "defaultMode": 0o440,
        "items": [{"key": "mlflow-signing-key", "path": "signing.pem"}]}}]
    assert hub["extraVolumeMounts"] == [{"name": "mlflow-signing-key", "mountPath": "/etc/mlplatform/mlflow",
                                         "readOnly": True}]


def test_mlflows_auth_app_runs_the_platforms_authorization_function():
    [config_map] = documents(CATALOG)["mlflow/auth-config.yaml"][1]
    ini = configparser.ConfigParser()
    ini.read_string(config_map["data"]["auth.ini"])
    assert dict(ini["mlflow"]) == {
        "default_permission": "NO_PERMISSIONS", "database_uri": "sqlite:////var/lib/mlflow/auth.db",
        "admin_username": "mlplatform-platform",
        "authorization_function": "hub_config.mlflow_access.server:authenticate",
        "grant_default_workspace_access": "false"}
    assert dict(ini["mlplatform"]) == {
        "public_key_file": "/etc/mlflow-auth/keys/signing.pub.pem",
        "ui_login_url": "https://jupyter.example.org/hub/mlplatform/mlflow-login", "cookie_secure": "true",
        # Only the platform moves these (the catalog's promotion.alias and protected_aliases).
        "protected_aliases": "champion",
        # RayService pods' tokens projected for MLflow (tests/integration/test_mlflow_workloads.py)
        "kubernetes_issuer": "https://oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLE",
        "kubernetes_jwks_url": "https://oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLE/keys"}
    assert dict(ini["mlplatform.namespaces"]) == {"team-vision": "team-vision", "team-nlp": "team-nlp"}
    assert dict(ini["mlplatform.service_accounts"]) == {"mlplatform-serving": "mlplatform-readers",
                                                         "mlplatform-spark": "mlplatform-members"}


def test_an_open_mlflow_gets_neither():
    access = CATALOG.mlflow.access.model_copy(update={"mode": "none"})
    open_catalog = CATALOG.model_copy(update={"mlflow": CATALOG.mlflow.model_copy(update={"access": access})})
    assert "MlflowAccess" not in jupyterhub_values(open_catalog)["hub"]["config"]
    assert "extraVolumes" not in jupyterhub_values(open_catalog)["hub"]
    assert "mlflow/auth-config.yaml" not in documents(open_catalog)
