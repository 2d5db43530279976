"""Everything `mlplatform render` makes of a catalog, checked and validated, as file texts in memory.

Nothing is written here: `render()` either returns every file or raises RenderError listing every
problem (each naming the catalog key it comes from), so a bad catalog never leaves half an output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlplatform_core.catalog import Catalog

from .admission import (ROLLOUT_POLICY, SERVER_TOKEN_POLICY, WORKLOAD_POLICY, binding, rollout_policy,
                        server_token_policy, workload_policy)
from .charts import RELEASES, chart_problems
from .checks import RenderError, check_catalog
from .cluster import cluster_objects
from .backstage import backstage_files
from .common import catalog_document
from .gateway import gateway_objects
from .gitops import argocd_applications, argocd_projects, gitops_problems
from .jupyterhub import jupyterhub_values
from .mlflow import mlflow_auth_config_map
from .operators import kuberay_operator_values, spark_operator_values
from .prepull import prepull_daemonsets
from .teams import team_objects
from .validation import object_problems
from .workload_webhook import webhook_objects
from .writer import dump

OUTPUTS = ("helm-values", "cluster", "prepull", "teams", "gitops", "backstage")
# Not core Kubernetes objects: the tests validate them against the Argo CD CRD and Backstage's schemas
# (tests/unit/test_render_gitops.py, test_render_backstage.py), which are not shipped with the package.
_NOT_CORE = ("helm-values/", "gitops/", "backstage/")

_EDIT = "Rendered by `mlplatform render` from {catalog}; do not edit: change the catalog and render again."
HEADERS = {
    "helm-values/jupyterhub.yaml": [
        "Values for the zero-to-jupyterhub chart (jupyterhub/jupyterhub).", _EDIT,
        "helm upgrade --install jupyterhub <z2jh checkout>/jupyterhub -n {hub_namespace} -f helm-values/jupyterhub.yaml",
        "(README, \"Deploy on Kubernetes\": the chart commit the tests render and start the hub with)",
    ],
    "helm-values/kuberay-operator.yaml": [
        "Values for the KubeRay operator chart (kuberay/kuberay-operator).", _EDIT,
        "Keys: ray-project/kuberay helm-chart/kuberay-operator/values.yaml (singleNamespaceInstall,",
        "crNamespacedRbacEnable, watchNamespace): a Role per team namespace, no ClusterRole.",
    ],
    "helm-values/spark-operator.yaml": [
        "Values for the Spark operator chart (spark-operator/spark-operator).", _EDIT,
        "Keys: kubeflow/spark-operator charts/spark-operator-chart/values.yaml (spark.jobNamespaces,",
        "spark.serviceAccount, spark.rbac): the drivers' service account and Role in each team namespace.",
    ],
    "cluster/admission-policies.yaml": [
        "Admission in team namespaces: only the hub's pods use a server's API token; RayServices and",
        "SparkApplications only with the platform's service accounts, images and Spark settings.", _EDIT,
        "kubectl apply -f cluster/ (Kubernetes 1.30+: ValidatingAdmissionPolicy is GA)"],
    "cluster/admission-webhook.yaml": [
        "The teams' RayServices and SparkApplications go to the platform service's admission webhook (budgets,",
        "the audit of deploy and submit); the service puts its CA into caBundle (GitOps: ignore that field).", _EDIT,
        "kubectl apply -f cluster/"],
    "cluster": ["What the hub may read across namespaces: ResourceQuotas and pods, list and watch only.", _EDIT,
                "kubectl apply -f cluster/"],
    "prepull": ["Image pre-pull DaemonSet of one node pool.", _EDIT, "kubectl apply -f prepull/"],
    "mlflow": ["MLflow's auth app settings (auth.ini): MLflow checks the hub's tokens (hub_config/render/mlflow.py).",
               _EDIT, "kubectl apply -f mlflow/ (into MLflow's namespace), then mount it at /etc/mlflow-auth"],
    "gitops/argocd-applications.yaml": [
        "Argo CD Applications: each team namespace syncs its directory of the GitOps repository (catalog `gitops`).",
        "First each team's AppProject (unless gitops.argocd.project names one): only the team's namespace, only",
        "RayServices and SparkApplications.", _EDIT, "kubectl apply -n {argocd_namespace} -f gitops/"],
    "backstage": ["A Backstage Software Template of the platform's golden paths (catalog `gitops`).", _EDIT,
                  "Register backstage/templates/*/template.yaml as catalog locations (the skeleton/ beside each)."],
    "gateway": ["Each team's rollout gateway, in the hub's namespace: where callers reach the team's endpoints and the",
                "platform records its rollouts' evidence (mlplatform-gateway).", _EDIT,
                "kubectl apply -f gateway/ (after the teams' namespaces: its policies name them)"],
    "teams": ["A team's namespace (Pod Security: baseline enforced), quota, catalog, RBAC and NetworkPolicies.",
              _EDIT, "kubectl apply -f teams/"],
}


def _header(key: str, catalog: Catalog) -> str:
    lines = HEADERS[key]
    argocd = catalog.gitops.argocd.namespace if catalog.gitops else ""
    return "".join(f"# {line.format(catalog=Path(catalog.path).name, hub_namespace=catalog.kubernetes.hub_namespace, argocd_namespace=argocd)}\n"
                   for line in lines)


def documents(catalog: Catalog) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Relative path → (the catalog key it comes from, its YAML documents)."""
    docs: dict[str, tuple[str, list[dict[str, Any]]]] = {
        "helm-values/jupyterhub.yaml": ("kubernetes", [jupyterhub_values(catalog)]),
        "helm-values/kuberay-operator.yaml": ("teams", [kuberay_operator_values(catalog)]),
        "helm-values/spark-operator.yaml": ("teams", [spark_operator_values(catalog)]),
    }
    docs["cluster/hub-rbac.yaml"] = ("kubernetes.hub_namespace", cluster_objects(catalog))
    docs["cluster/admission-policies.yaml"] = ("kubernetes", [
        server_token_policy(catalog), binding(SERVER_TOKEN_POLICY), workload_policy(catalog), binding(WORKLOAD_POLICY),
        rollout_policy(catalog), binding(ROLLOUT_POLICY)])
    docs["cluster/admission-webhook.yaml"] = ("platform_service", webhook_objects(catalog))
    if catalog.mlflow.access.mode == "hub-tokens":
        docs["mlflow/auth-config.yaml"] = ("mlflow.access", [mlflow_auth_config_map(catalog)])
    for pool, daemonset in prepull_daemonsets(catalog).items():
        source = f"gpu_types.{pool.removeprefix('gpu-')}" if pool.startswith("gpu-") else "profiles"
        docs[f"prepull/{pool}.yaml"] = (source, [daemonset])
    document = catalog_document(catalog, for_notebooks=True)  # the same in every team's ConfigMap
    for team in catalog.teams:
        docs[f"teams/{team}.yaml"] = (f"teams.{team}", team_objects(catalog, team, document))
    docs["gateway/gateways.yaml"] = ("kubernetes.gateway", gateway_objects(catalog))
    if catalog.gitops is not None:
        # The projects first: an Application is applied after the project it names (kubectl applies in order).
        docs["gitops/argocd-applications.yaml"] = ("gitops", argocd_projects(catalog) + argocd_applications(catalog))
        for path, (form, content) in backstage_files(catalog).items():
            if form == "yaml":
                docs[f"backstage/{path}"] = ("gitops", [content])
    return docs


def skeletons(catalog: Catalog) -> dict[str, str]:
    """Relative path → the text of a Backstage skeleton (nunjucks, not YAML until Backstage renders it)."""
    return {f"backstage/{path}": content for path, (form, content) in backstage_files(catalog).items()
            if form == "text"}


def render(catalog: Catalog, charts: dict[str, str | Path] | None = None) -> dict[str, str]:
    """Relative path → file text. Core objects are validated against Kubernetes' schemas (strict). `charts`
    (chart name of RELEASES → an unpacked chart) are rendered with their values as `helm install` would,
    and what they make is validated too: the z2jh values against its schema, every object strictly."""
    problems = check_catalog(catalog) + gitops_problems(catalog)
    if problems:
        raise RenderError(catalog.path, problems)
    docs = documents(catalog)
    for path, (source, objects) in docs.items():
        if not path.startswith(_NOT_CORE):
            for obj in objects:
                problems += object_problems(source, obj)
    for chart, chart_dir in (charts or {}).items():
        release = RELEASES[chart]
        [values] = docs[release.values][1]
        problems += chart_problems(chart_dir, release, values, catalog.kubernetes.hub_namespace)
    if problems:
        raise RenderError(catalog.path, problems)
    files = {path: dump(objects, _header(path if path in HEADERS else path.split("/")[0], catalog))
             for path, (_, objects) in docs.items()}
    return {**files, **skeletons(catalog)}
