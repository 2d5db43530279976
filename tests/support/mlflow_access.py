"""Talking to the test platform's MLflow, which checks the hub's tokens (hub_config/mlflow_access).

The test process acts as the platform identity (MLflow's admin): the `platform` fixture puts a
platform token in MLFLOW_TRACKING_TOKEN, so MlflowClient calls of tests and of the notebook code
they run in process are allowed everywhere. Servers the hub starts get their users' own tokens.

    with workspace("team-vision"):              # MlflowClient calls in the team's workspace
        register_model(platform.mlflow_url, ...)
    admin_api(platform).get(...)                # raw REST as the platform identity
    user_token(platform, "alice", ["team-vision/mlplatform-members"])
"""

from __future__ import annotations

from contextlib import contextmanager

import requests

from hub_config.mlflow_access.provisioning import WORKSPACE_HEADER
from hub_config.mlflow_access.tokens import TokenSigner

SESSION_LIFETIME = 6 * 3600  # longer than any test session


def signer(platform) -> TokenSigner:
    return TokenSigner(platform.mlflow_signing_key())


def platform_token(platform) -> str:
    return signer(platform).platform_token(SESSION_LIFETIME)


def user_token(platform, username: str, roles: list[str], lifetime: float = 600) -> str:
    return signer(platform).mint(username, roles=roles, team=None, lifetime=lifetime)[0]


def admin_api(platform, workspace_name: str | None = None) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {platform_token(platform)}"
    if workspace_name:
        session.headers[WORKSPACE_HEADER] = workspace_name
    return session


@contextmanager
def workspace(name: str):
    """MLflow client calls of this thread in workspace `name` (the default workspace afterwards)."""
    import mlflow

    mlflow.set_workspace(name)
    try:
        yield
    finally:
        mlflow.set_workspace(None)


@contextmanager
def s3_admin(platform):
    """This process writes MLflow artifacts to S3 with the S3 server's admin keys (team workspaces keep
    their artifacts under the team's prefix, which no MLflow proxy serves)."""
    import json
    import os

    keys = json.loads((platform.data_dir / "secrets.json").read_text())
    wanted = {"AWS_ACCESS_KEY_ID": keys["s3_access_key"], "AWS_SECRET_ACCESS_KEY": keys["s3_secret_key"],
              "MLFLOW_S3_ENDPOINT_URL": platform.s3_url, "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3

    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    # MLflow's S3 client comes from boto3's default session, which keeps the first credentials it resolved
    # (another platform's keys, in a module with a platform of its own): resolve them again, here and after.
    boto3.DEFAULT_SESSION = None
    try:
        yield
    finally:
        boto3.DEFAULT_SESSION = None
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def provision(platform, team: str) -> None:
    """The team's workspace, roles and experiment, as the hub makes them before a server of the team starts."""
    from hub_config.mlflow_access.provisioning import TeamProvisioner

    TeamProvisioner(signer(platform)).ensure_team(platform.load_catalog(), team)
