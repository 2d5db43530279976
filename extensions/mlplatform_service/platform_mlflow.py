"""MLflow as the platform identity (MLflow's admin), in one team's workspace at a time.

The identity's tokens are minted here with the hub's signing key (the service runs beside the hub and
reads the same key file); MLflow's client reads MLFLOW_TRACKING_TOKEN on every request, so a fresh
token is put there before each use. The workspace is bound to the calling thread only (MLflow's
request-scoped context variable), so two teams' requests in two threads never mix.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

from hub_config.mlflow_access.tokens import TokenSigner

TOKEN_LIFETIME = 300.0


class PlatformMlflow:
    def __init__(self, tracking_uri: str, signer: TokenSigner | None, *, workspaces: bool):
        self.tracking_uri, self.signer, self.workspaces = tracking_uri, signer, workspaces
        self._lock = threading.Lock()
        self._renew_at = 0.0

    @contextmanager
    def client(self, team: str):
        """An MlflowClient acting as the platform in `team`'s workspace (for the duration of the block)."""
        # MLflow imported at first use: the idle service does without its ~120 MB.
        from mlflow import MlflowClient
        from mlflow.utils.workspace_context import clear_server_request_workspace, set_server_request_workspace

        self._fresh_token()
        if self.workspaces:
            set_server_request_workspace(team)
        try:
            yield MlflowClient(self.tracking_uri)
        finally:
            if self.workspaces:
                clear_server_request_workspace()

    def _fresh_token(self) -> None:
        if self.signer is None:
            return
        with self._lock:
            if time.time() >= self._renew_at:
                os.environ["MLFLOW_TRACKING_TOKEN"] = self.signer.platform_token(TOKEN_LIFETIME)
                self._renew_at = time.time() + TOKEN_LIFETIME / 2
