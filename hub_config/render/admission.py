"""ValidatingAdmissionPolicies on team namespaces: walls the API server keeps whatever a user sends it.

Server tokens: only the hub's pods may use a server's API token.

Each notebook server's JupyterHub token lives in a Secret `<pod>-api-token` (spawners/server_token.py),
which nothing in a team namespace may read. But whoever may create pods there could mount it: the
Spark drivers' account creates executors, and KubeRay and the Spark operator create pods from
templates a user writes into RayServices and SparkApplications. The API server's admission refuses
any pod in a team namespace that references such a Secret — as a volume, a projected source, an env
value or envFrom, in any container — unless the hub's service account creates it.

Workloads: RayServices and SparkApplications only as the platform's builders make them (below).

Rollouts: a RayService in a rollout changes what it serves through the platform service only (below).
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.catalog import Catalog
from mlplatform_core.names import TEAM_LABEL, annotation_key

from ..spawners.server_token import token_secret_name
from .common import HUB_SERVICE_ACCOUNT, labels

SERVER_TOKEN_POLICY = "mlplatform-server-tokens"
SUFFIX = token_secret_name("")  # "-api-token"

# CEL over the pod (`object`): the names of every Secret it references.
_VOLUME_SECRETS = ("(has(object.spec.volumes) ? object.spec.volumes : [])"
                   ".filter(v, has(v.secret) && v.secret.secretName.endsWith('{s}')).map(v, v.secret.secretName)"
                   " + (has(object.spec.volumes) ? object.spec.volumes : [])"
                   ".filter(v, has(v.projected) && v.projected.sources.exists(p, has(p.secret)"
                   " && p.secret.name.endsWith('{s}'))).map(v, v.name)")
_CONTAINERS = ("object.spec.containers + (has(object.spec.initContainers) ? object.spec.initContainers : [])"
               " + (has(object.spec.ephemeralContainers) ? object.spec.ephemeralContainers : [])")
_ENV_SECRETS = ("variables.containers.filter(c, (has(c.env) && c.env.exists(e, has(e.valueFrom)"
                " && has(e.valueFrom.secretKeyRef) && e.valueFrom.secretKeyRef.name.endsWith('{s}')))"
                " || (has(c.envFrom) && c.envFrom.exists(f, has(f.secretRef) && f.secretRef.name.endsWith('{s}'))))"
                ".map(c, c.name)")


def _admission_policy(name: str, rules: list[tuple[str, str, list[str]]], variables: list[dict[str, str]],
                      validations: list[dict[str, str]]) -> dict[str, Any]:
    """A ValidatingAdmissionPolicy on CREATE and UPDATE of the (API group, version, resources) of `rules`, failing
    closed (an evaluation error denies)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": labels()},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [
                     {"apiGroups": [group], "apiVersions": [version], "operations": ["CREATE", "UPDATE"],
                      "resources": resources} for group, version, resources in rules]},
                 "variables": variables, "validations": validations},
    }


def server_token_policy(catalog: Catalog) -> dict[str, Any]:
    hub = f"system:serviceaccount:{catalog.kubernetes.hub_namespace}:{HUB_SERVICE_ACCOUNT}"
    message = (f"only the hub ({hub}) may create pods that use a notebook server's API token "
               f"(Secrets named *{SUFFIX})")
    return _admission_policy(SERVER_TOKEN_POLICY, [("", "v1", ["pods", "pods/ephemeralcontainers"])], [
        {"name": "fromHub", "expression": f"request.userInfo.username == '{hub}'"},
        {"name": "containers", "expression": _CONTAINERS},
        {"name": "volumesWithTokens", "expression": _VOLUME_SECRETS.format(s=SUFFIX)},
        {"name": "containersWithTokens", "expression": _ENV_SECRETS.format(s=SUFFIX)},
    ], [
        {"expression": "variables.fromHub || size(variables.volumesWithTokens) == 0",
         "messageExpression": f'"{message}: volumes " + variables.volumesWithTokens.join(", ")',
         "reason": "Forbidden"},
        {"expression": "variables.fromHub || size(variables.containersWithTokens) == 0",
         "messageExpression": f'"{message}: containers " + variables.containersWithTokens.join(", ")',
         "reason": "Forbidden"},
    ])


# --- RayServices and SparkApplications only as the platform's builders make them ------------------------
WORKLOAD_POLICY = "mlplatform-workloads"


def _quoted(values) -> str:
    return "[" + ", ".join(f"'{v}'" for v in sorted(set(values))) + "]"


def workload_policy(catalog: Catalog) -> dict[str, Any]:
    """What a user could otherwise put into the operators' pods through a RayService or SparkApplication
    (kubectl with the notebook's account): another service account, an image the platform does not
    build, Spark's own Kubernetes settings (pod templates, service accounts, images, volumes). The
    builders (mlplatform.serving.spec, mlplatform.spark.spec) write only what passes."""
    k8s = catalog.kubernetes
    serving_images = _quoted([k8s.images.serving, k8s.images.serving_gpu])
    ray_pods = ("[object.spec.rayClusterConfig.headGroupSpec.template.spec] + (has(object.spec.rayClusterConfig"
                ".workerGroupSpecs) ? object.spec.rayClusterConfig.workerGroupSpecs.map(g, g.template.spec) : [])")
    spark_images = ("[object.spec.image] + (has(object.spec.driver.image) ? [object.spec.driver.image] : [])"
                    " + (has(object.spec.executor.image) ? [object.spec.executor.image] : [])")
    is_ray, is_spark = "request.resource.resource == 'rayservices'", "request.resource.resource == 'sparkapplications'"
    return _admission_policy(WORKLOAD_POLICY, [("ray.io", "*", ["rayservices"]),
                                               ("sparkoperator.k8s.io", "*", ["sparkapplications"])], [
        {"name": "rayPods", "expression": f"{is_ray} ? {ray_pods} : []"},
    ], [
        {"expression": f"variables.rayPods.all(p, has(p.serviceAccountName) "
                       f"&& p.serviceAccountName == '{k8s.serving_service_account}')",
         "message": f"a RayService's pods run as {k8s.serving_service_account}", "reason": "Forbidden"},
        {"expression": f"variables.rayPods.all(p, p.containers.all(c, c.image in {serving_images}))",
         "message": f"a RayService's containers run the platform's serving images {serving_images}",
         "reason": "Forbidden"},
        {"expression": f"!({is_spark}) || (has(object.spec.driver.serviceAccount) "
                       f"&& object.spec.driver.serviceAccount == '{k8s.spark_service_account}')",
         "message": f"a SparkApplication's driver runs as {k8s.spark_service_account}", "reason": "Forbidden"},
        {"expression": f"!({is_spark}) || ({spark_images}).all(i, i == '{k8s.images.spark}')",
         "message": f"a SparkApplication runs the platform's Spark image {k8s.images.spark}",
         "reason": "Forbidden"},
        {"expression": f"!({is_spark}) || !has(object.spec.sparkConf) "
                       "|| object.spec.sparkConf.all(k, !k.startsWith('spark.kubernetes.'))",
         "message": "spark.kubernetes.* settings (pod templates, service accounts, images, volumes) are "
                    "the platform's", "reason": "Forbidden"},
    ])


# --- a RayService in a rollout changes through the platform only ---------------------------------------------------
ROLLOUT_POLICY = "mlplatform-rollouts"
ARGOCD_CONTROLLER = "argocd-application-controller"  # its service account in Argo CD's standard install
ROLLOUT_RECORD = annotation_key("application")  # serving/kubernetes.py: set while a RayService is in a rollout


def _record(obj: str) -> str:
    """CEL: the rollout record of `obj` (object, or oldObject: null when creating), '' when it has none."""
    exists = "request.operation == 'UPDATE' && " if obj == "oldObject" else ""
    return (f"{exists}has({obj}.metadata.annotations) && '{ROLLOUT_RECORD}' in {obj}.metadata.annotations"
            f" ? {obj}.metadata.annotations['{ROLLOUT_RECORD}'] : ''")


def rollout_policy(catalog: Catalog) -> dict[str, Any]:
    """While a RayService is in a rollout (serving/kubernetes.py records it in the `mlplatform.io/application`
    annotation), what Serve runs (`serveConfigV2`) and that record change only through the platform service (the
    hub's account), or in GitOps mode through Argo CD applying the repository: the live gates judge the candidate
    the service started, and a promotion moves `@champion` to that version, so no team swaps the model behind
    either side, starts a rollout of its own or ends one behind the service's back. Deleting the RayService stays
    the team's (the controller's pass then drops it from the traffic map)."""
    platform = [f"system:serviceaccount:{catalog.kubernetes.hub_namespace}:{HUB_SERVICE_ACCOUNT}"]
    if catalog.gitops is not None:
        platform.append(f"system:serviceaccount:{catalog.gitops.argocd.namespace}:{ARGOCD_CONTROLLER}")
    return _admission_policy(ROLLOUT_POLICY, [("ray.io", "*", ["rayservices"])], [
        {"name": "record", "expression": _record("oldObject")},
        {"name": "newRecord", "expression": _record("object")},
        {"name": "byPlatform", "expression": f"request.userInfo.username in {_quoted(platform)}"},
    ], [
        {"expression": "variables.byPlatform || variables.newRecord == variables.record",
         "message": f"a RayService's rollout ({ROLLOUT_RECORD}) is started, changed and ended by the "
                    "platform service (mlplatform.serving.rollouts)", "reason": "Forbidden"},
        {"expression": "variables.byPlatform || variables.record == '' "
                       "|| object.spec.serveConfigV2 == oldObject.spec.serveConfigV2",
         "message": "this RayService is in a rollout: what it serves changes through the platform service "
                    "only; promote or abort the rollout first", "reason": "Forbidden"},
    ])


def binding(policy: str) -> dict[str, Any]:
    """`policy`, denying, in every namespace of a team (labelled by teams.py)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy, "labels": labels()},
        "spec": {"policyName": policy, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {
                     "matchExpressions": [{"key": TEAM_LABEL, "operator": "Exists"}]}}},
    }
