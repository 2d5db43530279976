"""The notebook pods KubeSpawner makes in a team namespace pass the Baseline Pod Security profile the
namespace enforces, configured as the z2jh chart configures KubeSpawner from the rendered values."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from mlplatform_core.catalog import load_catalog
from hub_config.render.jupyterhub import jupyterhub_values
from hub_config.render.pod_security import baseline_problems
from hub_config.render.charts import merged_values
from hub_config.spawners.kube_quota import stop_cluster_quotas
from hub_config.spawners.kubernetes import CatalogKubeSpawner

from ..support.hub_user import User

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT.parent / "shared" / "charts" / "jupyterhub"
VISION = "team-vision"


def z2jh_config() -> Config:
    """What the chart's jupyterhub_config.py sets on KubeSpawner that bears on Pod Security, from our
    rendered values merged onto the chart's defaults (as helm does)."""
    values = merged_values(CHART, jupyterhub_values(load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})))
    singleuser = values["singleuser"]
    spawner = {"uid": singleuser["uid"], "fs_gid": singleuser["fsGid"],
               "allow_privilege_escalation": singleuser["allowPrivilegeEscalation"], "init_containers": []}
    if singleuser["cloudMetadata"]["blockWithIptables"]:
        # The chart's own init container (jupyterhub/files/hub/jupyterhub_config.py).
        tools = singleuser["networkTools"]["image"]
        spawner["init_containers"].append({
            "name": "block-cloud-metadata", "image": f"{tools['name']}:{tools['tag']}",
            "command": ["iptables", "-A", "OUTPUT", "-d", singleuser["cloudMetadata"]["ip"], "-j", "DROP"],
            "securityContext": {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}}})
    return Config({"KubeSpawner": spawner})


@pytest.fixture
async def cluster(fake_kube, kubeconfig):
    fake_kube.namespace(VISION)
    yield fake_kube
    await CatalogKubeSpawner._stop_all_reflectors()
    await stop_cluster_quotas()


@pytest.mark.parametrize("options", [
    {"team": VISION, "profile": "cpu"},
    {"team": VISION, "profile": "gpu-a100", "gpu_type": "a100", "gpu_count": 2},
], ids=["cpu", "gpu"])
async def test_notebook_pods_pass_baseline(cluster, options):
    spawner = CatalogKubeSpawner(_mock=True, user=User("alice"), config=z2jh_config())
    spawner.api_token = "token-of-alice"
    spawner.user_options = options
    await spawner._run_apply_user_options(options)
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await spawner.get_pod_manifest())
    assert spawner.namespace == VISION
    assert baseline_problems(pod["spec"], pod["metadata"].get("annotations")) == []
    # The NetworkPolicies (hub_config/render/network.py) select notebook pods by this label and port name.
    assert pod["metadata"]["labels"]["component"] == "singleuser-server"
    assert [p["name"] for p in pod["spec"]["containers"][0]["ports"]] == ["notebook-port"]
    spawner.release()
