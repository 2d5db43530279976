"""The local platform's MLflow tracking server: with MLflow's auth app and the hub's tokens, or open.

With `mlflow.access.mode: hub-tokens` (the bundled catalog) MLflow runs its auth app with one
workspace per team; the hub signs tokens with a key pair made here on first start:

    <data>/mlflow/keys/signing.pem       the hub's private key (0600; the hub reads it)
    <data>/mlflow/keys/signing.pub.pem   MLflow's copy of the public key
    <data>/mlflow/auth.ini               the auth app's settings (MLFLOW_AUTH_CONFIG_PATH)
    <data>/mlflow/auth.db                its users, roles and permissions

The auth app's admin password and Flask secret are random on every start and go only to MLflow:
nobody logs in with a password (server.py ignores passwords), the hub acts as the admin with tokens.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from mlplatform_core.catalog import Catalog

from ..mlflow_access.auth_ini import auth_ini
from ..mlflow_access.tokens import generate_key_pair


def signing_key(store: Path) -> Path:
    """The hub's private signing key (made on first use)."""
    keys = store / "keys"
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    generate_key_pair(keys / "signing.pem", keys / "signing.pub.pem")
    return keys / "signing.pem"


# `mlflow server` that becomes its uvicorn server (exec) instead of starting it as a child and waiting:
# one process, not two. The waiting `mlflow server` (all of MLflow imported) held 271 MB RSS (208 MB
# PSS) for nothing; measured with two users' servers and a model deployed, 2026-12-03. Job execution,
# the one thing that process does besides waiting (its job runner), is off here (MLFLOW_SERVER_ENABLE_
# JOB_EXECUTION below). What uvicorn gets is MLflow's own: its command line and variables.
LAUNCHER = """
import os, sys
import mlflow.server
def exec_server(command, extra_env=None, **kwargs):
    sys.stdout.flush(); sys.stderr.flush()
    os.execvpe(command[0], command, {**os.environ, **(extra_env or {})})
mlflow.server._exec_cmd = exec_server
sys.argv[0] = "mlflow"
from mlflow.cli import cli
cli()
"""


def command(catalog: Catalog, store: Path, *, mlflow: Path, port: int, hub_url: str) -> tuple[list[str], dict]:
    """The `mlflow server` arguments and the variables only MLflow gets. `mlflow`: the venv's `mlflow`
    script, whose Python runs it (see LAUNCHER)."""
    (store / "artifacts").mkdir(parents=True, exist_ok=True)
    python = Path(mlflow).parent / "python"
    cmd = [str(python if python.exists() else sys.executable), "-c", LAUNCHER,
           "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts")]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if catalog.mlflow.access.mode == "hub-tokens":
        signing_key(store)
        ini = store / "auth.ini"
        ini.write_text(auth_ini(database_uri=f"sqlite:///{store / 'auth.db'}", hub_url=hub_url,
                                protected_aliases=catalog.promotion.protected,
                                public_key_file=str(store / "keys" / "signing.pub.pem")))
        cmd += ["--app-name", "basic-auth", "--enable-workspaces"]
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_AUTH_ADMIN_PASSWORD=secrets.token_urlsafe(32),
                   MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_urlsafe(32),
                   MLFLOW_RBAC_SEED_DEFAULT_ROLES="false")  # only the roles the platform provisions
    return cmd, env
