"""Point KubeSpawner (kubernetes_asyncio) at a kubeconfig: it reads $KUBECONFIG at import and caches."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def point_kubespawner_at(kubeconfig: str | Path) -> Callable[[], None]:
    """Make kubernetes_asyncio and KubeSpawner's cached config use `kubeconfig`; returns an undo.

    Also sets $KUBECONFIG (a fixture should prefer monkeypatch.setenv, which the undo does not touch).
    """
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config import kube_config
    from kubespawner import clients

    previous = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    previous_default = Configuration.get_default_copy()
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    os.environ["KUBECONFIG"] = str(kubeconfig)
    clients.load_config.cache_clear()
    clients._client_cache.clear()  # clients made for an earlier server keep its address

    def undo() -> None:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = previous
        Configuration.set_default(previous_default)
        clients.load_config.cache_clear()
        clients._client_cache.clear()

    return undo
