"""Where the platform service changes an endpoint's rollout: the serving backend of the platform.

    backend = LocalRollouts.from_environ()        # the local platform: the Ray head's records (serving/local.py)
    backend.start(team, "iris", model_version="4", requested_uri="models:/iris/4", rollout=..., inference_log=...)
    backend.change(team, "iris", rollout)         # mode, share: the gateway's traffic map, in place
    backend.end(team, "iris", promote=True)       # one model again: the candidate's version, or the champion's
    backend.status(team, "iris")                  # serving.status's answer (its "rollout": None without one)
    backend.active()                              # [(team, name, status)] of every endpoint in rollout

On the local platform the service runs as the same OS user as the Ray head, and acts on the team's
applications through the same records and Serve REST API the notebook's backend uses; on Kubernetes it
patches the team's RayService (serving/kubernetes.py), or in GitOps mode commits it (kubernetes_rollouts.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mlplatform.serving.rollout import Rollout
from mlplatform_core.catalog import Catalog
from mlplatform_core.contract import PlatformEnvironment

from .gitops import GitOpsRepository
from .workloads import WorkloadAdmission

log = logging.getLogger(__name__)
PLATFORM = "platform"  # who acts when no user does: the rollout controller


class RolloutBackend(Protocol):
    """`actor`: who acts (a user, or `platform` for the controller), the author of a GitOps commit. The answers of
    start, change and end carry `commit` (Commit.as_dict()) when the change was committed to Git."""

    def start(self, team: str, name: str, *, model_version: str, requested_uri: str, rollout: Rollout,
              inference_log: Mapping[str, Any], actor: str = PLATFORM) -> dict: ...

    def change(self, team: str, name: str, rollout: Rollout, *, actor: str = PLATFORM) -> dict: ...

    def set_inference_log(self, team: str, name: str, inference_log: Mapping[str, Any] | None, *,
                          actor: str = PLATFORM) -> dict: ...

    def end(self, team: str, name: str, *, promote: bool, actor: str = PLATFORM) -> dict: ...

    def last_commit(self, team: str, name: str) -> dict | None: ...

    def status(self, team: str, name: str) -> dict: ...

    def active(self) -> list[tuple[str, str, dict]]: ...


class _ServingRollouts:
    """What both backends do: the team's serving backend (`_serving`, theirs) carries out each action."""

    def start(self, team, name, *, model_version, requested_uri, rollout, inference_log, actor=PLATFORM):
        return self._serving(team).start_rollout(name, model_version=model_version, requested_uri=requested_uri,
                                                 rollout=rollout, inference_log=inference_log)

    def change(self, team, name, rollout, *, actor=PLATFORM):
        return self._serving(team).set_rollout(name, rollout)

    def set_inference_log(self, team, name, inference_log, *, actor=PLATFORM):
        return self._serving(team).set_inference_log(name, inference_log)

    def end(self, team, name, *, promote, actor=PLATFORM):
        return self._serving(team).end_rollout(name, promote=promote)

    def status(self, team, name):
        return self._serving(team).status(name)

    def last_commit(self, team, name):
        return None  # changes are commits in GitOps mode on Kubernetes only


@dataclass
class LocalRollouts(_ServingRollouts):
    """On the local platform (imported there only: the local backend's modules are not in the hub image)."""

    environ: Mapping[str, str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LocalRollouts:
        return cls(dict(os.environ if environ is None else environ))

    def _serving(self, team: str):
        from mlplatform.serving.gpu_reservations import HubRolloutGpus
        from mlplatform.serving.local import LocalRayConfig, LocalServing

        # Candidates' GPUs are reserved in the hub's pool with the service's own token (JupyterHub's variables
        # of a managed service); no server's hub (environ={}): the service deploys and deletes nothing.
        return LocalServing(LocalRayConfig.from_environ(self.environ),
                            environment=PlatformEnvironment(team=team, backend="local"), environ={},
                            rollout_gpus=HubRolloutGpus.from_environ(self.environ))

    def active(self):
        return _statuses(self.status, self._serving("").in_rollout())


def _statuses(status: Callable[[str, str], dict], endpoints: list[tuple[str, str]]) -> list[tuple[str, str, dict]]:
    """(team, name, status) of each endpoint in rollout; one whose status cannot be read is logged and left out, so
    it never keeps the controller from the others (it is tried again at the next pass)."""
    found = []
    for team, name in endpoints:
        try:
            found.append((team, name, status(team, name)))
        except Exception:
            log.exception("the status of %s/%s, in rollout, could not be read; its rollout is checked at the next "
                          "pass", team, name)
    return found


def rollout_backend(catalog: Callable[[], Catalog], *, repository: Callable[[], GitOpsRepository] | None = None,
                    admission: WorkloadAdmission | None = None) -> RolloutBackend:
    """The rollouts' backend of the platform's serving backend; on Kubernetes in GitOps mode its changes are
    commits to `repository()` (the service's GitOps writer), checked with `admission`."""
    if catalog().platform.backend == "local":
        return LocalRollouts.from_environ()
    # Imported here: the Kubernetes client (~50 MB) is not needed on the local platform.
    from .kubernetes_rollouts import KubernetesRollouts

    return KubernetesRollouts(catalog, repository=repository, admission=admission)
