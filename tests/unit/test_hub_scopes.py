"""configure_hub's part in credential vending: the custom scope is defined, every user holds it for
themselves, server tokens ask for it for their own user — merged into what a chart's config already set.
The tokens a real hub makes from this are checked in tests/integration/test_s3_broker.py."""

from __future__ import annotations

from mlplatform_core.catalog import load_catalog
from traitlets.config import Config

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.hub import configure_hub, server_token_scopes

CATALOG = load_catalog(DEFAULT_CATALOG, environ={})
SCOPE = "custom:mlplatform:s3-credentials"
GPU_SCOPE = "custom:mlplatform:gpu-reservations"  # served models' GPUs in the local pool (gpu_handler.py)
MLFLOW_SCOPE = "custom:mlplatform:mlflow-token"  # MLflow tokens (mlflow_access/handlers.py)


def test_the_credential_scope_is_defined_and_granted_to_each_user_for_themselves():
    c = Config()
    configure_hub(c, CATALOG)
    assert sorted(c.JupyterHub.custom_scopes) == sorted([SCOPE, GPU_SCOPE, MLFLOW_SCOPE])
    assert c.JupyterHub.custom_scopes[SCOPE]["description"] and c.JupyterHub.custom_scopes[GPU_SCOPE]["description"]
    assert c.JupyterHub.extra_user_scopes == {f"{SCOPE}!user", f"{GPU_SCOPE}!user", f"{MLFLOW_SCOPE}!user"}
    assert c.Spawner.server_token_scopes is server_token_scopes
    assert "load_roles" not in c.JupyterHub  # JupyterHub's roles (admin included) stay as they are


def test_scopes_set_before_configure_hub_are_kept():
    c = Config()
    c.JupyterHub.custom_scopes = {"custom:other:read": {"description": "another extension's"}}
    c.JupyterHub.extra_user_scopes = {"access:services"}
    configure_hub(c, CATALOG)
    assert sorted(c.JupyterHub.custom_scopes) == sorted(["custom:other:read", SCOPE, GPU_SCOPE, MLFLOW_SCOPE])
    assert c.JupyterHub.extra_user_scopes == {"access:services", f"{SCOPE}!user", f"{GPU_SCOPE}!user", f"{MLFLOW_SCOPE}!user"}
