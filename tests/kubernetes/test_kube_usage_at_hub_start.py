"""A restarted hub keeps the usage ledger of the cluster's workloads before anyone opens it.

The real `jupyterhub` process with CatalogKubeSpawner against the fake API server, its config calling
`start_spawner_class_with_the_hub` as `configure_hub` does: the quota cache and the usage reconcile start
with the hub, not at the first spawn page. A served model's pods are there when the hub starts; nobody
logs in; the ledger opens the model's interval, and closes it (its budget hold gone) when the pods go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from hub_config.catalog import DEFAULT_CATALOG

from .test_hub_on_kubernetes import HUB_CONFIG, REPO, VISION, _answers, _tail, _wait, free_port
from .test_kube_usage import open_allocations, ray_pods

# What the rendered hub.extraConfig does through configure_hub (hub_config/hub.py), and a fast reconcile.
AT_HUB_START = """
from hub_config.hub import start_spawner_class_with_the_hub
start_spawner_class_with_the_hub()
c.KubeUsage.interval = 0.5
c.KubeUsage.grace = 0
"""


@pytest.fixture
def started_hub(fake_kube, kubeconfig, tmp_path):
    """The hub started with a RayService's pods already in team-vision (as after a hub restart)."""
    fake_kube.namespace(VISION)
    fake_kube.kubelet()
    for pod in ray_pods("iris", replicas=2):
        fake_kube.seed(pod)
    port = free_port()
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(HUB_CONFIG.format(
        port=port, hub_port=free_port(), proxy_api_port=free_port(), tmp=tmp_path, catalog=str(DEFAULT_CATALOG),
        chp=str(REPO / "node_modules" / ".bin" / "configurable-http-proxy"), notebook_port=free_port())
        + AT_HUB_START)
    log_path = tmp_path / "hub.log"
    log = open(log_path, "wb")
    # The hub's governance database: $MLPLATFORM_SERVICE_DATABASE_URL (tests/support/governance.py), inherited.
    hub = subprocess.Popen([str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config)], cwd=tmp_path,
                           env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        _wait(lambda: _answers(f"http://127.0.0.1:{port}/hub/health"), 60,
              f"the hub did not start: {_tail(log_path)}")
        yield log_path
    finally:
        os.killpg(hub.pid, signal.SIGTERM)
        hub.wait(20)
        log.close()


def test_the_usage_of_workloads_is_kept_from_the_hubs_start_without_a_spawn_page(started_hub, fake_kube):
    config = Config()  # the test's view of the same database
    _wait(lambda: "model:team-vision/iris" in open_allocations(config), 30,
          f"the model's interval was not opened without a spawn page: {_tail(started_hub)}")
    assert open_allocations(config) == {"model:team-vision/iris": ("model", "bob", "a100", 2)}
    assert fake_kube.count("get", "pods") == 0  # from the watch-backed cache, not a poll of the API
    assert "CatalogKubeSpawner started with the hub" in started_hub.read_text()

    # The model is deleted while nobody uses the hub: its interval ends, the budget it held is free.
    for pod in ray_pods("iris", replicas=2):
        fake_kube.delete("pods", pod["metadata"]["name"], VISION)
    _wait(lambda: open_allocations(config) == {}, 30,
          f"the model's interval was not closed: {_tail(started_hub)}")
