"""Safe rollout on Kubernetes: the platform service patches the team's RayService (issue 12).

In the rendered cluster (its RBAC, the admission webhook), alice's notebook deploys a RayService; the
platform service, with the hub pod's service account, adds a candidate in shadow, moves it to canary and
promotes it: each patch validates against KubeRay's CRD (the fake checks it strictly), keeps the endpoint
(the RayService, its route, its serve service), changes only serveConfigV2 and the worker group's room,
and is admitted (GPUs charged for the candidate's workers) and audited by the webhook.
"""

from __future__ import annotations

import json

import kubernetes
import pytest
import requests
import yaml
from mlplatform.serving.errors import BackendUnavailable, ServingConflict
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig, recorded_application
from mlplatform.serving.rollout import rollout
from mlplatform_core.names import gateway_traffic

from mlplatform_service.kubernetes_rollouts import KubernetesRollouts

from ..support.authz import authorization_matrix
from ..support.rendered_cluster import CATALOG
from . import test_workload_admission as admission
from .test_serving_kubernetes import operator_running
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
    """The RayService's record of its rollout: the champion with its candidate and the settings."""
    return recorded_application(fake.get("rayservices", name, NS))


def serve_applications(fake, name="iris") -> list[dict]:
    """What Serve runs: the applications of the RayService's serveConfigV2."""
    return yaml.safe_load(fake.get("rayservices", name, NS)["spec"]["serveConfigV2"])["applications"]


def routed(fake) -> dict:
    """The team's traffic map (in the hub's namespace) as its gateway reads it: endpoint → its traffic."""
    found = fake.get("configmaps", gateway_traffic(TEAM), K8S.hub_namespace) or {}
    return {name: json.loads(text) for name, text in (found.get("data") or {}).items()}


def without(service: dict) -> dict:
    """The RayService's spec with serveConfigV2 and the worker group's maxReplicas left out."""
    spec = {k: v for k, v in service["spec"].items() if k != "serveConfigV2"}
    groups = [{k: v for k, v in g.items() if k != "maxReplicas"} for g in spec["rayClusterConfig"]["workerGroupSpecs"]]
    return {**spec, "rayClusterConfig": {**spec["rayClusterConfig"], "workerGroupSpecs": groups}}


def test_the_service_moves_a_rollout_through_the_rayservice_in_place(cluster, tmp_path, authz):
    fake, stores = cluster
    alice = serving(fake, tmp_path)
    deploy(alice, gpus=1, replicas=1)
    operator_running(fake, workers=1)
    before = fake.get("rayservices", "iris", NS)
    [champion] = serve_applications(fake)
    rollouts = KubernetesRollouts(lambda: CATALOG, api_client=hub_client(fake, tmp_path))

    status = rollouts.start(TEAM, "iris", model_version="2", requested_uri="models:/iris/2",
                            rollout=rollout(mode="shadow", since=1.0), inference_log=LOG)
    assert (status["model_version"], status["rollout"]["model_version"]) == ("1", "2")
    # Serve runs the champion's application as it was and the candidate's beside it, at its own route.
    serve = serve_applications(fake)
    assert [(a["name"], a["route_prefix"]) for a in serve] == [("iris", "/iris"),
                                                                ("iris--candidate", "/iris--candidate")]
    assert serve[0] == champion and serve[1]["args"]["model_uri"] == "models:/iris/2"
    app = application(fake)
    assert [d["name"] for d in app["deployments"]] == ["Model", "Candidate"]
    assert app["args"]["candidate"]["model_uri"] == "models:/iris/2"
    assert app["deployments"][0]["user_config"]["rollout"]["mode"] == "shadow"
    assert app["deployments"][0]["user_config"]["inference_log"] == LOG
    # The gateway routes by the team's map, which the service wrote in the hub's namespace.
    assert routed(fake) == {"iris": {"team": TEAM, "champion_version": "1", "candidate_version": "2",
                                     "rollout": rollout(mode="shadow", since=1.0).to_dict(), "sample_rate": 1.0}}
    started = fake.get("rayservices", "iris", NS)
    assert started["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 4  # candidate + surges
    assert without(started) == without(before)  # the same cluster: KubeRay's hash leaves replica counts out
    # The webhook admitted the patch: the candidate's workers' GPUs are held against the budget too.
    hold = CATALOG.platform_service.budget_hold_hours
    assert stores.budgets.status(TEAM).held_gpu_hours == 4 * hold
    # KubeRay runs both applications: the endpoint runs once the candidate's does too.
    assert rollouts.status(TEAM, "iris")["state"] == "deploying"
    operator_running(fake, generation=started["metadata"]["generation"], workers=2)
    assert rollouts.status(TEAM, "iris")["state"] == "running"

    # Mode and share are the gateway's: the map changes, no Serve application does.
    rollouts.change(TEAM, "iris", rollout(mode="canary", share=0.05, since=1.0))
    assert routed(fake)["iris"]["rollout"]["share"] == 0.05
    assert application(fake)["deployments"][0]["user_config"]["rollout"]["share"] == 0.05  # the record
    assert fake.get("rayservices", "iris", NS)["spec"] == started["spec"]
    # The inference log's sample rate, then the log off: the evidence's sample rate in the map.
    logged = rollouts.set_inference_log(TEAM, "iris", {**LOG, "sample_rate": 0.2})
    assert logged["rollout"]["inference_log"] == application(fake)["deployments"][0]["user_config"]["inference_log"] \
        == {**LOG, "sample_rate": 0.2}
    assert routed(fake)["iris"]["sample_rate"] == 0.2
    assert rollouts.set_inference_log(TEAM, "iris", None)["rollout"]["inference_log"] is None
    assert "inference_log" not in application(fake)["deployments"][0]["user_config"]
    assert routed(fake)["iris"]["sample_rate"] == 0.0
    assert fake.get("rayservices", "iris", NS)["spec"] == started["spec"]
    with pytest.raises(ServingConflict, match="already tries version 2"):
        rollouts.start(TEAM, "iris", model_version="3", requested_uri="models:/iris/3",
                       rollout=rollout(mode="shadow"), inference_log=LOG)
    # A deploy would replace what the rollout runs: refused, as on the local platform.
    with pytest.raises(ServingConflict, match="'iris' is trying version 2 beside its champion; promote it or end"):
        deploy(alice, gpus=1, replicas=1)
    # Nor may the team's notebook swap what either side serves, or the rollout's record, behind the service (the
    # API server's admission policy): the gates judge the candidate the service started.
    current = fake.get("rayservices", "iris", NS)
    swapped = current["spec"]["serveConfigV2"].replace("models:/iris/2", "models:/iris/5")
    forged = json.loads(current["metadata"]["annotations"]["mlplatform.io/application"])
    forged["deployments"][0]["user_config"]["rollout"] = rollout(mode="off").to_dict()
    for action, patch in (
            ("swap the model of a RayService in rollout", {"spec": {"serveConfigV2": swapped}}),
            ("change a RayService's rollout record", {"metadata": {"annotations": {
                "mlplatform.io/application": json.dumps(forged)}}}),
            ("end a rollout behind the service", {"metadata": {"annotations": {"mlplatform.io/application": ""}}})):
        r = as_notebook(fake, tmp_path, "patch", "iris", patch)
        authz.check("notebook SA (team-vision)", action, r, allowed=False)
        assert "ValidatingAdmissionPolicy 'mlplatform-rollouts'" in r.json()["message"]
    assert "promote or abort the rollout first" in as_notebook(fake, tmp_path, "patch", "iris", {
        "spec": {"serveConfigV2": swapped}}).json()["message"]
    assert fake.get("rayservices", "iris", NS)["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
    [(team, name, active)] = rollouts.active()
    assert (team, name, active["rollout"]["model_version"], active["rollout"]["rollout"]["mode"]) == (
        TEAM, "iris", "2", "canary")

    done = rollouts.end(TEAM, "iris", promote=True)
    assert (done["model_version"], done["rollout"]) == ("2", None)
    assert routed(fake) == {}
    final = fake.get("rayservices", "iris", NS)
    [served] = serve_applications(fake)
    assert [d["name"] for d in served["deployments"]] == ["Model"] and served["args"]["model_uri"] == "models:/iris/2"
    assert application(fake) == served
    assert final["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 2
    assert final["metadata"]["annotations"]["mlplatform.io/previous-version"] == "1"
    assert final["metadata"]["annotations"]["mlplatform.io/application"] == ""
    assert stores.budgets.status(TEAM).held_gpu_hours == 2 * hold
    assert rollouts.active() == []
    with pytest.raises(ServingConflict, match="has no rollout"):
        rollouts.change(TEAM, "iris", rollout(mode="off"))
    redeploys = [r for r in records(stores, action="redeploy") if r["target"] == f"model:{TEAM}/iris"]
    # The webhook audits the two changes of what runs (the candidate in, the champion alone again); mode, share and
    # the log's rate change no pod spec (the service audits them as rollout steps: rollouts.py).
    assert len(redeploys) == 2 and {r["actor"] for r in redeploys} == {f"system:serviceaccount:{K8S.hub_namespace}:hub"}


def as_notebook(fake, tmp_path, verb: str, name: str, body: dict | None = None) -> requests.Response:
    """A request of the team's notebook account (alice's pod) on a RayService of its namespace, as kubectl sends it."""
    token = fake.token_for(service_account=f"{NS}/{K8S.service_account}", pod=admission.POD)
    url = f"{fake.url}/apis/ray.io/v1/namespaces/{NS}/rayservices" + (f"/{name}" if verb != "create" else "")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}
    method = {"patch": requests.patch, "create": requests.post, "delete": requests.delete}[verb]
    return method(url, json=body, headers=headers, timeout=30)


def test_a_rollout_record_made_by_a_team_is_refused_and_the_team_may_delete_its_endpoint(cluster, tmp_path, authz):
    fake, _ = cluster
    deploy(serving(fake, tmp_path), replicas=1)
    body = fake.get("rayservices", "iris", NS)
    body = {**body, "metadata": {**{k: body["metadata"][k] for k in ("labels", "annotations")}, "name": "iris2",
                                 "annotations": {**body["metadata"]["annotations"],
                                                 "mlplatform.io/application": json.dumps({"args": {"candidate": {}}})}}}
    r = as_notebook(fake, tmp_path, "create", "iris2", body)
    authz.check("notebook SA (team-vision)", "create a RayService with a rollout record", r, allowed=False)
    assert "is started, changed and ended by the platform service" in r.json()["message"]
    KubernetesRollouts(lambda: CATALOG, api_client=hub_client(fake, tmp_path)).start(
        TEAM, "iris", model_version="2", requested_uri="models:/iris/2", rollout=rollout(mode="shadow"),
        inference_log=LOG)
    authz.check("notebook SA (team-vision)", "delete its RayService in rollout", as_notebook(
        fake, tmp_path, "delete", "iris"), allowed=True)


def test_a_traffic_map_that_cannot_be_written_leaves_no_candidate(cluster, tmp_path):
    fake, _ = cluster
    deploy(serving(fake, tmp_path), replicas=1)
    before = fake.get("rayservices", "iris", NS)["spec"]
    rollouts = KubernetesRollouts(lambda: CATALOG, api_client=hub_client(fake, tmp_path))
    fake.fail("create", "configmaps", code=500, message="etcd is down")
    with pytest.raises(BackendUnavailable, match="the traffic map of team team-vision was not written: .*etcd is down"):
        rollouts.start(TEAM, "iris", model_version="2", requested_uri="models:/iris/2", rollout=rollout(mode="shadow"),
                       inference_log=LOG)
    assert fake.get("rayservices", "iris", NS)["spec"] == before and application(fake)["args"].get("candidate") is None
    assert routed(fake) == {}


def test_an_endpoint_deleted_in_rollout_leaves_its_teams_map(cluster, tmp_path):
    fake, _ = cluster
    alice = serving(fake, tmp_path)
    deploy(alice, replicas=1)
    rollouts = KubernetesRollouts(lambda: CATALOG, api_client=hub_client(fake, tmp_path))
    rollouts.start(TEAM, "iris", model_version="2", requested_uri="models:/iris/2", rollout=rollout(mode="shadow"),
                   inference_log=LOG)
    assert list(routed(fake)) == ["iris"]
    alice.delete("iris", wait=False)
    assert rollouts.active() == [] and routed(fake) == {}  # the controller's pass cleans the map


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


def test_a_candidate_the_map_does_not_route_is_off_until_the_service_routes_it(cluster, tmp_path):
    """A RayService with a candidate but no map entry (a rollout from before the gateway, or one whose end Argo CD
    has not synced yet) gets no traffic, and says so; a change the API server refuses leaves the map as it was."""
    fake, _ = cluster
    deploy(serving(fake, tmp_path), replicas=1)
    hub = hub_client(fake, tmp_path)
    KubernetesServing(KubernetesServingConfig(namespace=NS, team=TEAM, user="platform"), api_client=hub).start_rollout(
        "iris", model_version="2", requested_uri="models:/iris/2", rollout=rollout(mode="canary", share=0.5),
        inference_log=LOG)
    rollouts = KubernetesRollouts(lambda: CATALOG, api_client=hub)
    [(_, _, status)] = rollouts.active()
    assert status["rollout"]["rollout"]["mode"] == "off" and "traffic map has no entry" in \
        status["rollout"]["rollout"]["reason"]
    fake.fail("patch", "rayservices", code=500, message="etcd is down")
    with pytest.raises(BackendUnavailable, match="etcd is down"):
        rollouts.change(TEAM, "iris", rollout(mode="canary", share=0.1))
    assert routed(fake) == {}  # put back: not even the entry the change wrote first
    rollouts.change(TEAM, "iris", rollout(mode="canary", share=0.1))
    assert routed(fake)["iris"]["rollout"]["share"] == 0.1 and routed(fake)["iris"]["candidate_version"] == "2"
    assert rollouts.status(TEAM, "iris")["rollout"]["rollout"]["mode"] == "canary"
