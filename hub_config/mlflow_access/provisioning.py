"""Each team's place in MLflow, made by the hub as the platform identity before a server of the team starts.

With access control (`mlflow.access.mode: hub-tokens`) a team gets
- a workspace named after the team, whose default artifact root is the catalog's
  `mlflow.team_artifact_root` (for example s3://platform/teams/team-vision/mlflow), so artifacts land
  under the team's prefix, written by notebooks with their own short-lived S3 credentials;
- two roles in it: `mlplatform-members` (use the workspace, edit every experiment and model in it; a
  creator also gets MANAGE on what they create) and `mlplatform-readers` (read them), which users get
  through their tokens' `roles` claim (tokens.mlflow_roles);
- its default experiment, named after the team (MLFLOW_EXPERIMENT_NAME), inside the workspace. Only the
  team's members may create in the workspace, so nobody can squat the name.
Without access control (`none`), the experiment is made in MLflow's one namespace with the team's
artifact location. Uses MLflow's REST API: the hub does not install MLflow.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import requests
from mlplatform_core.catalog import Catalog

from .tokens import MEMBERS, READERS, TokenSigner

ROLE_PERMISSIONS = {
    MEMBERS: [("workspace", "*", "USE"), ("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")],
    READERS: [("experiment", "*", "READ"), ("registered_model", "*", "READ")],
}
WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"
RECHECK_AFTER = 300.0  # seconds a team counts as provisioned in this hub process


class ProvisioningError(RuntimeError):
    pass


def team_artifact_location(catalog: Catalog, team: str) -> str | None:
    root = catalog.mlflow.team_artifact_root
    return root.format(team=team).rstrip("/") if root else None


class TeamProvisioner:
    """Makes teams' workspaces, roles and experiments; idempotent, safe for concurrent spawns of a team."""

    def __init__(self, signer: TokenSigner | None, timeout: float = 10):
        self.signer, self.timeout = signer, timeout
        self._done: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def ensure_team(self, catalog: Catalog, team: str) -> None:
        key = (catalog.mlflow.tracking_uri, team)
        with self._lock:  # spawns run this in threads: one team at a time is plenty
            if time.monotonic() - self._done.get(key, -RECHECK_AFTER) < RECHECK_AFTER:
                return
            try:
                _Mlflow(catalog, self.signer, self.timeout).provision(team)
            except requests.RequestException as e:
                raise ProvisioningError(f"MLflow at {catalog.mlflow.tracking_uri} is unreachable: "
                                        f"{type(e).__name__}") from None
            self._done[key] = time.monotonic()


class _Mlflow:
    """MLflow's REST API as the platform identity (or anonymously, without access control)."""

    def __init__(self, catalog: Catalog, signer: TokenSigner | None, timeout: float):
        self.catalog, self.timeout = catalog, timeout
        self.base = catalog.mlflow.tracking_uri.rstrip("/")
        self.access = catalog.mlflow.access.mode == "hub-tokens"
        if self.access and signer is None:
            raise ProvisioningError("mlflow.access.mode is hub-tokens but the hub has no MLflow signing key "
                                    "(c.MlflowAccess.signing_key_file)")
        self.session = requests.Session()
        if self.access:
            self.session.headers["Authorization"] = f"Bearer {signer.platform_token()}"

    def provision(self, team: str) -> None:
        location = team_artifact_location(self.catalog, team)
        if self.access:
            self._ensure_workspace(team, location)
            self._ensure_roles(team)
            self._ensure_experiment(team, workspace=team)
        else:
            self._ensure_experiment(team, artifact_location=location)

    def _call(self, method: str, path: str, *, ok=(200,), workspace: str | None = None, **kwargs) -> dict | None:
        headers = {WORKSPACE_HEADER: workspace} if workspace else {}
        response = self.session.request(method, self.base + path, timeout=self.timeout, headers=headers, **kwargs)
        if response.status_code in ok:
            return response.json() if response.content else {}
        if response.status_code == 404 and method == "GET":
            return None
        if "RESOURCE_ALREADY_EXISTS" in response.text:  # another spawn of the team was faster
            return None
        raise ProvisioningError(f"MLflow at {self.catalog.mlflow.tracking_uri} refused {method} {path}: "
                                f"{response.status_code} {response.text[:200]}")

    def _ensure_workspace(self, team: str, location: str | None) -> None:
        if self._call("GET", f"/api/3.0/mlflow/workspaces/{quote(team, safe='')}") is None:
            body = {"name": team, "description": f"team {team} (managed by mlplatform)"}
            if location:
                body["default_artifact_root"] = location
            self._call("POST", "/api/3.0/mlflow/workspaces", ok=(200, 201), json=body)

    def _ensure_roles(self, team: str) -> None:
        roles = {r["name"]: r for r in self._call("GET", "/api/3.0/mlflow/roles/list",
                                                   params={"workspace": team})["roles"]}
        for name, permissions in ROLE_PERMISSIONS.items():
            role = roles.get(name) or self._call("POST", "/api/3.0/mlflow/roles/create", json={
                "workspace": team, "name": name, "description": "managed by mlplatform from the catalog"})["role"]
            have = {(p["resource_type"], p["resource_pattern"]): p for p in self._call(
                "GET", "/api/3.0/mlflow/roles/permissions/list", params={"role_id": str(role["id"])})["role_permissions"]}
            for resource_type, pattern, permission in permissions:
                found = have.get((resource_type, pattern))
                if found is None:
                    self._call("POST", "/api/3.0/mlflow/roles/permissions/add", json={
                        "role_id": role["id"], "resource_type": resource_type, "resource_pattern": pattern,
                        "permission": permission})
                elif found["permission"] != permission:
                    self._call("PATCH", "/api/3.0/mlflow/roles/permissions/update",
                               json={"role_permission_id": found["id"], "permission": permission})

    def _ensure_experiment(self, team: str, *, workspace: str | None = None, artifact_location: str | None = None
                           ) -> None:
        api = "/api/2.0/mlflow/experiments"
        if self._call("GET", f"{api}/get-by-name", params={"experiment_name": team}, workspace=workspace) is None:
            body = {"name": team, **({"artifact_location": artifact_location} if artifact_location else {})}
            self._call("POST", f"{api}/create", json=body, workspace=workspace)
