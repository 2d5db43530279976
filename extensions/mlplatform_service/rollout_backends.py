"""Where the platform service changes an endpoint's rollout: the serving backend of the platform.

    backend = LocalRollouts.from_environ()        # the local platform: the Ray head's records (serving/local.py)
    backend.start(team, "iris", model_version="4", requested_uri="models:/iris/4", rollout=..., inference_log=...)
    backend.change(team, "iris", rollout)         # mode, share: the champion's user_config, in place
    backend.end(team, "iris", promote=True)       # one model again: the candidate's version, or the champion's
    backend.status(team, "iris")                  # serving.status's answer (its "rollout": None without one)
    backend.active()                              # [(team, name, status)] of every endpoint in rollout

On the local platform the service runs as the same OS user as the Ray head, and acts on the team's
applications through the same records and Serve REST API the notebook's backend uses; on Kubernetes it
patches the team's RayService (serving/kubernetes.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mlplatform import kube
from mlplatform.serving.errors import DeploymentNotFound
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig
from mlplatform.serving.rollout import Rollout
from mlplatform_core.catalog import Catalog
from mlplatform_core.contract import PlatformEnvironment


class RolloutBackend(Protocol):
    def start(self, team: str, name: str, *, model_version: str, requested_uri: str, rollout: Rollout,
              inference_log: Mapping[str, Any]) -> dict: ...

    def change(self, team: str, name: str, rollout: Rollout) -> dict: ...

    def end(self, team: str, name: str, *, promote: bool) -> dict: ...

    def status(self, team: str, name: str) -> dict: ...

    def active(self) -> list[tuple[str, str, dict]]: ...


class _ServingRollouts:
    """What both backends do: the team's serving backend (`_serving`, theirs) carries out each action."""

    def start(self, team, name, *, model_version, requested_uri, rollout, inference_log):
        return self._serving(team).start_rollout(name, model_version=model_version, requested_uri=requested_uri,
                                                 rollout=rollout, inference_log=inference_log)

    def change(self, team, name, rollout):
        return self._serving(team).set_rollout(name, rollout)

    def end(self, team, name, *, promote):
        return self._serving(team).end_rollout(name, promote=promote)

    def status(self, team, name):
        return self._serving(team).status(name)


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
        return [(team, name, self.status(team, name)) for team, name in self._serving("").in_rollout()]


class KubernetesRollouts(_ServingRollouts):
    """On a cluster: the team's RayService, patched with the hub pod's service account (its Role in every
    team namespace lets it get, list and patch RayServices: hub_config/render/teams.py). The API server's
    admission webhook admits and audits each patch like any other change of the RayService."""

    def __init__(self, catalog: Callable[[], Catalog], api_client: Any = None):
        self.catalog, self._client = catalog, api_client

    def _serving(self, team: str) -> KubernetesServing:
        catalog = self.catalog()
        if team not in catalog.teams:
            raise DeploymentNotFound(f"team {team!r} is not a team of the catalog")
        if self._client is None:  # once: the API client keeps its connections
            self._client = kube.connect()
        config = KubernetesServingConfig(namespace=catalog.teams[team].namespace, team=team, user="platform")
        return KubernetesServing(config, api_client=self._client)

    def active(self):
        found = []
        for team in self.catalog().teams:
            serving = self._serving(team)
            found += [(team, name, serving.status(name)) for name in serving.in_rollout()]
        return found


def rollout_backend(catalog: Callable[[], Catalog]) -> RolloutBackend:
    """The rollouts' backend of the platform's serving backend."""
    if catalog().platform.backend == "local":
        return LocalRollouts.from_environ()
    return KubernetesRollouts(catalog)
