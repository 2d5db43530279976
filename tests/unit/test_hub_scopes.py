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


def test_the_rollout_gpu_scope_is_the_platform_services_alone():
    """Local platform: the service reserves rollout candidates' GPUs (rollout_gpu_handler.py); no user holds it."""
    from hub_config.platform_service import configure_platform_service
    from hub_config.rollout_gpu_handler import SCOPE as ROLLOUT_SCOPE, grant_rollout_gpus

    c = Config()
    configure_hub(c, CATALOG)
    configure_platform_service(c, CATALOG, url="http://127.0.0.1:18082", environment={})
    grant_rollout_gpus(c)
    assert c.JupyterHub.custom_scopes[ROLLOUT_SCOPE]["description"] and SCOPE in c.JupyterHub.custom_scopes
    [role] = c.JupyterHub.load_roles
    assert role["services"] == ["mlplatform"] and role["scopes"][-1] == ROLLOUT_SCOPE
    assert not any(ROLLOUT_SCOPE in scope for scope in c.JupyterHub.extra_user_scopes)
