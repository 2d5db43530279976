"""Only the hub's pods may use a server's API token: a ValidatingAdmissionPolicy on team namespaces.

Each notebook server's JupyterHub token lives in a Secret `<pod>-api-token` (spawners/server_token.py),
which nothing in a team namespace may read. But whoever may create pods there could mount it: the
Spark drivers' account creates executors, and KubeRay and the Spark operator create pods from
templates a user writes into RayServices and SparkApplications. The API server's admission refuses
any pod in a team namespace that references such a Secret — as a volume, a projected source, an env
value or envFrom, in any container — unless the hub's service account creates it.
"""

from __future__ import annotations

from typing import Any

from mlplatform_core.catalog import Catalog
from mlplatform_core.names import TEAM_LABEL

from ..spawners.server_token import token_secret_name
from .common import HUB_SERVICE_ACCOUNT, labels

POLICY = "mlplatform-server-tokens"
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


def server_token_policy(catalog: Catalog) -> dict[str, Any]:
    hub = f"system:serviceaccount:{catalog.kubernetes.hub_namespace}:{HUB_SERVICE_ACCOUNT}"
    message = (f"only the hub ({hub}) may create pods that use a notebook server's API token "
               f"(Secrets named *{SUFFIX})")
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY, "labels": labels()},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["pods", "pods/ephemeralcontainers"]}]},
            "variables": [
                {"name": "fromHub", "expression": f"request.userInfo.username == '{hub}'"},
                {"name": "containers", "expression": _CONTAINERS},
                {"name": "volumesWithTokens", "expression": _VOLUME_SECRETS.format(s=SUFFIX)},
                {"name": "containersWithTokens", "expression": _ENV_SECRETS.format(s=SUFFIX)},
            ],
            "validations": [
                {"expression": "variables.fromHub || size(variables.volumesWithTokens) == 0",
                 "messageExpression": f'"{message}: volumes " + variables.volumesWithTokens.join(", ")',
                 "reason": "Forbidden"},
                {"expression": "variables.fromHub || size(variables.containersWithTokens) == 0",
                 "messageExpression": f'"{message}: containers " + variables.containersWithTokens.join(", ")',
                 "reason": "Forbidden"},
            ],
        },
    }


def server_token_policy_binding() -> dict[str, Any]:
    """The policy, denying, in every namespace of a team (labelled by teams.py)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY, "labels": labels()},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {
                     "matchExpressions": [{"key": TEAM_LABEL, "operator": "Exists"}]}}},
    }
