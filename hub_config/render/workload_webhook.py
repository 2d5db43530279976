"""The admission webhook of the teams' workloads: budgets and the audit of deploy and submit on Kubernetes.

Every create, update and delete of a RayService or SparkApplication in a team namespace goes from the
API server to the platform service in the hub pod (mlplatform_service/workloads.py), over HTTPS at
WEBHOOK_PORT of the hub Service (jupyterhub.py exposes it and lets the API server in). failurePolicy
Fail: without the service nothing is deployed or submitted beyond the budget (as spawns fail closed).
sideEffects NoneOnDryRun: a dry run records nothing. No caBundle here: the service makes its own CA at
start and puts it in (mlplatform_service/webhook.py), for which the hub's service account may get and
patch this one configuration (a GitOps tool applying these files should ignore `caBundle`).
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.catalog import Catalog
from mlplatform_core.names import TEAM_LABEL, service_host

from .cluster import hub_cluster_role_binding
from .common import HUB_SERVICE, labels

WEBHOOK_CONFIGURATION = "mlplatform-workloads"
WEBHOOK_PORT = 10102  # the service's HTTPS listener in the hub pod, on the hub Service
WEBHOOK_PATH = "/validate-workloads"  # mlplatform_service.webhook.PATH
CA_WRITER = "mlplatform-hub-webhook-ca"


def webhook_hosts(catalog: Catalog) -> list[str]:
    """The names the API server calls the hub Service by (the serving certificate holds them)."""
    namespace = catalog.kubernetes.hub_namespace
    return [f"{HUB_SERVICE}.{namespace}.svc", service_host(HUB_SERVICE, namespace, catalog.kubernetes.cluster_domain)]


def workload_webhook(catalog: Catalog) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION, "labels": labels()},
        "webhooks": [{
            "name": "workloads.mlplatform.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
            "clientConfig": {"service": {"namespace": catalog.kubernetes.hub_namespace, "name": HUB_SERVICE,
                                         "port": WEBHOOK_PORT, "path": WEBHOOK_PATH}},
            "rules": [
                {"apiGroups": ["ray.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"],
                 "resources": ["rayservices"], "scope": "Namespaced"},
                {"apiGroups": ["sparkoperator.k8s.io"], "apiVersions": ["*"],
                 "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["sparkapplications"],
                 "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [{"key": TEAM_LABEL, "operator": "Exists"}]},
        }],
    }


def ca_writer_role() -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": CA_WRITER, "labels": labels()},
            "rules": [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
                       "resourceNames": [WEBHOOK_CONFIGURATION], "verbs": ["get", "patch"]}]}


def webhook_objects(catalog: Catalog) -> list[dict[str, Any]]:
    return [workload_webhook(catalog), ca_writer_role(), hub_cluster_role_binding(catalog, CA_WRITER)]
