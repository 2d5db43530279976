"""GitOps mode as a notebook's backends use it (the catalog's `gitops` section set): what the Kubernetes backend
would apply is sent to the platform service, which commits it to the team's file of the GitOps repository as
the user (the repository's credentials are the platform's and never reach the notebook); Argo CD then applies
it, and the backend follows the object in the cluster as before.

    gitops = GitOps.for_environment(environment)      # None outside GitOps mode
    answer = gitops.commit("serving", "iris", ray_service, message="...")   # {"commit": {...}, "waiting_for"}
    gitops.committed("serving", "iris")                # {"object": what Git holds or None, "commit": its last}
    gitops.remove("serving", "iris", message="...")

Every rule is the service's (who may commit what, to which path, within which budget); a refusal comes back as
`GitOpsRefused` with the service's status and message, and nothing was committed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
from mlplatform_core.catalog import CatalogError
from mlplatform_core.contract import PlatformEnvironment, variable

TIMEOUT = 60.0  # a commit fetches, commits and pushes (and retries an overtaken push)
TOKEN_VARIABLE = "JUPYTERHUB_API_TOKEN"


class GitOpsRefused(Exception):
    """The platform service did not commit the change: `status` is its HTTP status (503: it or the Git server
    is not answering), the message its reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GitOps:
    team: str
    mode: str  # direct | review (the catalog's gitops.mode)
    service_url: str
    token: str = field(repr=False)

    @classmethod
    def for_environment(cls, environment: PlatformEnvironment, environ: Mapping[str, str] | None = None, *,
                        required: bool = True) -> GitOps | None:
        """The team's GitOps mode, from the environment contract and its catalog; None when the catalog has
        no `gitops` section (or there is no catalog). In GitOps mode without the platform service to commit
        through: GitOpsRefused when `required` (Kubernetes: nothing may reach the cluster outside Git), else
        None (the local backend outside a server the hub started: Git is its record, not its source)."""
        if not environment.catalog_path:
            return None
        try:
            gitops = environment.catalog().gitops
        except CatalogError:
            return None  # the backend reports the unreadable catalog itself
        if gitops is None:
            return None
        env = os.environ if environ is None else environ
        token = env.get(TOKEN_VARIABLE, "")
        if not environment.service_url or not token or not environment.team:
            if not required:
                return None
            raise GitOpsRefused(503, f"the platform is in GitOps mode: changes are commits made by the platform "
                                     f"service, reached with {variable('service_url')}, {variable('team')} and "
                                     "JUPYTERHUB_API_TOKEN, which this server lacks (a server the platform's hub "
                                     "starts has them)")
        return cls(team=environment.team, mode=gitops.mode, service_url=environment.service_url.rstrip("/"),
                   token=token)

    def commit(self, kind: str, name: str, document: Mapping[str, Any], message: str = "") -> dict[str, Any]:
        """Commit `document` as object `name` of `kind` (serving, spark) of the team; the service's answer."""
        return self._call("PUT", kind, name, {"object": document, "message": message})

    def remove(self, kind: str, name: str, message: str = "") -> dict[str, Any]:
        return self._call("DELETE", kind, name, {"message": message})

    def committed(self, kind: str, name: str) -> dict[str, Any]:
        """What Git holds for `name` now: {"object": the document or None, "commit": the file's last commit or
        None, "branch", "path", "waiting_for"}."""
        return self._call("GET", kind, name, None)

    def _call(self, method: str, kind: str, name: str, body: dict | None) -> dict[str, Any]:
        url = f"{self.service_url}/api/gitops/{quote(self.team, safe='')}/{kind}/{quote(name, safe='')}"
        try:
            response = requests.request(method, url, json=body, timeout=TIMEOUT,
                                        headers={"Authorization": f"token {self.token}"})
        except requests.RequestException as e:
            raise GitOpsRefused(503, f"the platform service is not answering ({type(e).__name__}); in GitOps mode "
                                     "changes are commits it makes: nothing was committed") from None
        if response.ok:
            return response.json()
        try:
            message = response.json()["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300] or response.reason
        raise GitOpsRefused(response.status_code, message)


def waiting_message(answer: Mapping[str, Any], *, keeps: str = "") -> str:
    """'committed <sha> to <branch> by <user>: waiting for Argo CD to sync it' from the service's answer."""
    commit = answer.get("commit") or {}
    return (f"committed {commit.get('short', '?')} to {commit.get('branch', '?')}: waiting for "
            f"{answer.get('waiting_for') or 'Argo CD to sync it'}{keeps}")
