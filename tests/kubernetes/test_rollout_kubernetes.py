"""Safe rollout on Kubernetes: the platform service patches the team's RayService (issue 12).

In the rendered cluster (its RBAC, the admission webhook), alice's notebook deploys a RayService; the
platform service, with the hub pod's service account, adds a candidate in shadow, moves it to canary and
promotes it: each patch validates against KubeRay's CRD (the fake checks it strictly), keeps the endpoint
(the RayService, its route, its serve service), changes only serveConfigV2 and the worker group's room,
and is admitted (GPUs charged for the candidate's workers) and audited by the webhook.
"""

from __future__ import annotations

import kubernetes
import pytest
import requests
import yaml
from mlplatform.serving.errors import ServingConflict
from mlplatform.serving.rollout import rollout

from mlplatform_service.kubernetes_rollouts import KubernetesRollouts

from ..support.authz import authorization_matrix
from ..support.rendered_cluster import CATALOG
from . import test_workload_admission as admission
from .test_workload_admission import NS, TEAM, deploy, records, serving

charts, cluster = admission.charts, admission.cluster  # its fixtures: the rendered cluster, alice's pod, the webhook

K8S = CATALOG.kubernetes
LOG = {"sample_rate": 1.0, "flush_seconds": 10}


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


def hub_client(fake, tmp_path):
    """The hub pod's service account (the platform service runs in the hub pod)."""
    token = fake.token_for(service_account=f"{K8S.hub_namespace}/hub")
    path = fake.write_kubeconfig(tmp_path / "kubeconfig-hub", namespace=K8S.hub_namespace, token=token)
    return kubernetes.config.new_client_from_config(config_file=str(path))


def application(fake, name="iris") -> dict:
    return yaml.safe_load(fake.get("rayservices", name, NS)["spec"]["serveConfigV2"])["applications"][0]


def without(service: dict) -> dict:
    """The RayService's spec with serveConfigV2 and the worker group's maxReplicas left out."""
    spec = {k: v for k, v in service["spec"].items() if k != "serveConfigV2"}
    groups = [{k: v for k, v in g.items() if k != "maxReplicas"} for g in spec["rayClusterConfig"]["workerGroupSpecs"]]
    return {**spec, "rayClusterConfig": {**spec["rayClusterConfig"], "workerGroupSpecs": groups}}


def test_the_service_moves_a_rollout_through_the_rayservice_in_place(cluster, tmp_path, authz):
    fake, stores = cluster
    deploy(serving(fake, tmp_path), gpus=1, replicas=1)
    before = fake.get("rayservices", "iris", NS)
    rollouts = KubernetesRollouts(lambda: CATALOG, api_client=hub_client(fake, tmp_path))

    status = rollouts.start(TEAM, "iris", model_version="2", requested_uri="models:/iris/2",
                            rollout=rollout(mode="shadow", since=1.0), inference_log=LOG)
    assert (status["model_version"], status["rollout"]["model_version"]) == ("1", "2")
    app = application(fake)
    assert [d["name"] for d in app["deployments"]] == ["Model", "Candidate"]
    assert app["route_prefix"] == "/iris" and app["args"]["candidate"]["model_uri"] == "models:/iris/2"
    assert app["deployments"][0]["user_config"]["rollout"]["mode"] == "shadow"
    assert app["deployments"][0]["user_config"]["inference_log"] == LOG
    started = fake.get("rayservices", "iris", NS)
    assert started["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 4  # candidate + surges
    assert without(started) == without(before)  # the same cluster: KubeRay's hash leaves replica counts out
    # The webhook admitted the patch: the candidate's workers' GPUs are held against the budget too.
    hold = CATALOG.platform_service.budget_hold_hours
    assert stores.budgets.status(TEAM).held_gpu_hours == 4 * hold

    rollouts.change(TEAM, "iris", rollout(mode="canary", share=0.05, since=1.0))
    changed = fake.get("rayservices", "iris", NS)
    assert application(fake)["deployments"][0]["user_config"]["rollout"]["share"] == 0.05
    assert without(changed) == without(started) and application(fake)["args"] == app["args"]  # in place
    # The inference log's sample rate, then the log off: the champion's user_config too, in place.
    logged = rollouts.set_inference_log(TEAM, "iris", {**LOG, "sample_rate": 0.2})
    assert logged["rollout"]["inference_log"] == application(fake)["deployments"][0]["user_config"]["inference_log"] \
        == {**LOG, "sample_rate": 0.2}
    assert rollouts.set_inference_log(TEAM, "iris", None)["rollout"]["inference_log"] is None
    assert "inference_log" not in application(fake)["deployments"][0]["user_config"]
    assert without(fake.get("rayservices", "iris", NS)) == without(started)
    with pytest.raises(ServingConflict, match="already tries version 2"):
        rollouts.start(TEAM, "iris", model_version="3", requested_uri="models:/iris/3",
                       rollout=rollout(mode="shadow"), inference_log=LOG)
    assert [name for _, name, _ in rollouts.active()] == ["iris"]

    done = rollouts.end(TEAM, "iris", promote=True)
    assert (done["model_version"], done["rollout"]) == ("2", None)
    final = fake.get("rayservices", "iris", NS)
    assert [d["name"] for d in application(fake)["deployments"]] == ["Model"]
    assert application(fake)["args"]["model_uri"] == "models:/iris/2"
    assert final["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 2
    assert final["metadata"]["annotations"]["mlplatform.io/previous-version"] == "1"
    assert stores.budgets.status(TEAM).held_gpu_hours == 2 * hold
    assert rollouts.active() == []
    with pytest.raises(ServingConflict, match="has no rollout"):
        rollouts.change(TEAM, "iris", rollout(mode="off"))
    redeploys = [r for r in records(stores, action="redeploy") if r["target"] == f"model:{TEAM}/iris"]
    assert len(redeploys) == 5 and {r["actor"] for r in redeploys} == {f"system:serviceaccount:{K8S.hub_namespace}:hub"}


def test_the_hub_patches_rayservices_of_team_namespaces_only(cluster, tmp_path, authz):
    fake, _ = cluster
    deploy(serving(fake, tmp_path), replicas=1)
    fake.namespace("elsewhere")
    token = fake.token_for(service_account=f"{K8S.hub_namespace}/hub")
    patch = [{"op": "add", "path": "/metadata/labels/x", "value": "y"}]
    for namespace, allowed in ((NS, True), ("elsewhere", False)):
        r = requests.patch(f"{fake.url}/apis/ray.io/v1/namespaces/{namespace}/rayservices/iris", json=patch,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json-patch+json"},
                           timeout=30)
        authz.check("hub (platform service)", f"patch a RayService in {namespace}", r, allowed=allowed,
                    status=None if allowed else 403)
    r = requests.delete(f"{fake.url}/apis/ray.io/v1/namespaces/{NS}/rayservices/iris",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    authz.check("hub (platform service)", "delete a team's RayService", r, allowed=False)
