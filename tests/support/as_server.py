"""Code of the test process acting as a user's running notebook server: the variables its notebooks'
`mlplatform.registry` reads (the platform service's URL, the server's own hub token, its team)."""

from __future__ import annotations

SERVER_VARIABLES = ("MLPLATFORM_SERVICE_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_SERVER_NAME", "MLFLOW_WORKSPACE",
                    "MLPLATFORM_TEAM", "MLPLATFORM_USER")


def act_as(monkeypatch, server_env: dict[str, str]) -> None:
    """From now until the test ends, this process's promotion calls are the server's."""
    for name in SERVER_VARIABLES:
        monkeypatch.setenv(name, server_env.get(name, ""))
