"""Nobody but the hub creates pods that use a notebook server's API token (hub_config/render/admission.py).

The rendered cluster (RBAC and the ValidatingAdmissionPolicy with its binding) in the fake API server,
which evaluates the policy's CEL as the API server does (tests/support/fake_kube/admission.py). The
Spark drivers' account may create pods in its team's namespace (the Spark operator chart's Role) and
runs user code: every way a pod can reference a token Secret is refused for it, and for a cluster
admin; the hub's own pods (spawners/server_token.py) pass. Writes are dry runs, admitted as real ones.
"""

from __future__ import annotations

import copy

import pytest

from ..support.authz import authorization_matrix
from ..support.rendered_cluster import CATALOG
from .test_rbac_matrix import call, clients, pod

A = CATALOG.teams["team-vision"].namespace
K8S = CATALOG.kubernetes
TOKEN = "jupyter-alice-api-token"
HUB = f"system:serviceaccount:{K8S.hub_namespace}:hub"


def with_token(how: str) -> dict:
    """A pod of team A that uses alice's server token Secret `how`."""
    obj = copy.deepcopy(pod(f"steal-{how.split()[0].lower()}"))
    spec, container = obj["spec"], obj["spec"]["containers"][0]
    if how == "volume":
        spec["volumes"] = [{"name": "t", "secret": {"secretName": TOKEN}}]
    elif how == "projected volume":
        spec["volumes"] = [{"name": "t", "projected": {"sources": [{"secret": {"name": TOKEN}}]}}]
    elif how == "env secretKeyRef":
        container["env"] = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": TOKEN, "key": "token"}}}]
    elif how == "initContainer envFrom":
        spec["initContainers"] = [{**copy.deepcopy(container), "name": "init", "envFrom": [{"secretRef": {"name": TOKEN}}]}]
    return obj


WAYS = ["volume", "projected volume", "env secretKeyRef", "initContainer envFrom"]
ACTORS = {"Spark driver SA, team A": f"{A}/{K8S.spark_service_account}", "hub SA": f"{K8S.hub_namespace}/hub"}


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.mark.parametrize("actor", ACTORS)
def test_only_the_hub_creates_pods_that_use_a_server_token(rendered_cluster, authz, actor):
    core, _, _ = clients(rendered_cluster, ACTORS[actor])
    plain = call(lambda: core.create_namespaced_pod(A, pod("plain"), dry_run="All"), ())
    authz.check(actor, "create a pod (A)", plain, allowed=True)
    for how in WAYS:
        response = call(lambda: core.create_namespaced_pod(A, with_token(how), dry_run="All"), ())
        authz.check(actor, f"create a pod using a server token by {how} (A)", response, allowed=actor == "hub SA")
        if actor != "hub SA":
            message = response.json()["message"]
            assert message.startswith(f'pods "steal-{how.split()[0].lower()}" is forbidden: ValidatingAdmissionPolicy '
                                      "'mlplatform-server-tokens' with binding 'mlplatform-server-tokens' denied "
                                      f"request: only the hub ({HUB}) may create pods that use a notebook server's "
                                      "API token (Secrets named *-api-token): ")


def test_a_cluster_admin_is_refused_too_and_other_namespaces_are_not_bound(rendered_cluster):
    admin, _, _ = clients(rendered_cluster, None)
    admin.api_client.configuration.api_key = {"authorization": f"Bearer {rendered_cluster.token}"}
    refused = call(lambda: admin.create_namespaced_pod(A, with_token("volume"), dry_run="All"), ())
    assert refused.status_code == 403 and "mlplatform-server-tokens" in refused.json()["message"]
    rendered_cluster.namespace("elsewhere")  # not a team namespace: the binding's selector leaves it out
    elsewhere = call(lambda: admin.create_namespaced_pod("elsewhere", with_token("volume"), dry_run="All"), ())
    assert elsewhere.status_code == 200
