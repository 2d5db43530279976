"""Argo CD `Application`s from the catalog's `gitops` section: one per team namespace, syncing the team's files.

Each Application reads the team's directory of the GitOps repository (Gitops.team_directory) at `gitops.branch`,
only the files of the kinds' path templates (`directory.include`), into the team's namespace and nowhere else.

The walls, decided: each Application is in an `AppProject` of its team's own (`mlplatform-<team>`, rendered here
unless `gitops.argocd.project` names one) that permits only the GitOps repository, the team's namespace on the
cluster Argo CD runs in, and RayServices and SparkApplications; nothing cluster-scoped. Argo CD checks every
object of a sync against it before applying anything, so a file in one team's directory (one merged from a
reviewed Backstage pull request, which the platform service never saw) naming another team's namespace, or of
another kind (a RoleBinding, a Secret), fails the team's sync: "namespace ... is not permitted in project ...",
"resource ... is not permitted in project ...". Argo CD's `default` project, by contrast, permits every
namespace and kind.

RBAC, decided: nothing is rendered for Argo CD's application controller. Argo CD's standard install binds it to a
ClusterRole that may manage every resource, RayServices and SparkApplications included; the render's admission
policies check what an object holds, not who sends it, and the platform service's admission webhook charges an
object written by a Kubernetes identity (Argo CD) to the user its `mlplatform.io/user` label names. A namespaced
Argo CD install (no ClusterRole) needs a Role per team namespace allowing get/list/watch/create/update/patch/delete
on ray.io rayservices and sparkoperator.k8s.io sparkapplications, bound to its argocd-application-controller.

No `resources-finalizer.argocd.argoproj.io`: deleting an Application (gitops removed from the catalog, a team
dropped) leaves the team's running models and jobs alone instead of deleting them all.
"""

from __future__ import annotations

import copy
import posixpath
from typing import Any

from mlplatform_core.catalog import Catalog
from mlplatform_core.catalog_gitops import KINDS, Gitops
from mlplatform_core.names import TEAM_LABEL

from .common import labels

API_VERSION = "argoproj.io/v1alpha1"
IN_CLUSTER = "https://kubernetes.default.svc"  # Argo CD's name for the cluster it runs in
# A sync the API server refuses (an admission webhook down, the team's quota full) is tried again, with backoff,
# rather than waiting for the next commit.
RETRY = {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "5m"}}


# What a team's files may hold (the objects users make from the notebook, KINDS), all namespaced.
PERMITTED_KINDS = (("ray.io", "RayService"), ("sparkoperator.k8s.io", "SparkApplication"))


def application_name(team: str) -> str:
    return f"mlplatform-{team}"


def project_name(catalog: Catalog, team: str) -> str:
    """The AppProject of the team's Application: the catalog's `gitops.argocd.project`, else the team's own."""
    return catalog.gitops.argocd.project or f"mlplatform-{team}"


def directory_source(gitops: Gitops, *, team: str, namespace: str) -> dict[str, Any]:
    """The team's directory, and in it only the kinds' files (`include`: an other file there is never applied)."""
    root = gitops.team_directory(team=team, namespace=namespace)
    patterns = []
    for kind in KINDS:
        file = gitops.path(kind, team=team, namespace=namespace, name="*")
        patterns.append(posixpath.relpath(file, root) if root else file)
    include = patterns[0] if len(set(patterns)) == 1 else "{" + ",".join(dict.fromkeys(patterns)) + "}"
    directory: dict[str, Any] = {"include": include}
    if any("/" in p for p in patterns):
        directory["recurse"] = True
    return {"repoURL": gitops.repository, "targetRevision": gitops.branch, "path": root or ".", "directory": directory}


def argocd_application(catalog: Catalog, team: str) -> dict[str, Any]:
    gitops = catalog.gitops
    namespace = catalog.teams[team].namespace
    policy = gitops.argocd.sync_policy
    sync: dict[str, Any] = {}
    if policy.automated:
        # allowEmpty: a team's last model deleted from Git is pruned too (automated sync otherwise refuses to
        # prune every resource of an Application: "auto-sync will wipe out all resources").
        sync["automated"] = {"prune": policy.prune, "selfHeal": policy.self_heal, "allowEmpty": policy.prune}
    if policy.sync_options:
        sync["syncOptions"] = list(policy.sync_options)
    sync["retry"] = copy.deepcopy(RETRY)
    return {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "metadata": {"name": application_name(team), "namespace": gitops.argocd.namespace,
                     "labels": labels(**{TEAM_LABEL: team})},
        "spec": {
            "project": project_name(catalog, team),
            "source": directory_source(gitops, team=team, namespace=namespace),
            "destination": {"server": IN_CLUSTER, "namespace": namespace},
            "syncPolicy": sync,
        },
    }


def gitops_problems(catalog: Catalog) -> list[str]:
    """What `gitops` needs beyond catalog validation to be rendered for this cluster."""
    gitops = catalog.gitops
    if gitops is None:
        return []
    problems = []
    owners = {team.namespace: name for name, team in catalog.teams.items()}
    namespace = gitops.argocd.namespace
    if namespace in owners or namespace == catalog.kubernetes.hub_namespace:
        whose = f"team {owners[namespace]}'s" if namespace in owners else "the hub's"
        problems.append(f"gitops.argocd.namespace: {namespace!r} is not allowed: it is {whose} namespace; allowed: "
                        "the namespace Argo CD runs in, e.g. 'argocd' (Applications there are Argo CD's to manage)")
    host, path = gitops.host_and_path
    if "/" not in path:
        problems.append(f"gitops.repository: {gitops.repository!r} is not allowed here: the Backstage templates' "
                        f"pull-request actions name a repository by owner and name; allowed: e.g. "
                        f"'https://{host}/<owner>/{path or '<repo>'}.git'")
    if gitops.pull_request_provider is None:
        problems.append(f"gitops.provider: unset is not allowed for {gitops.repository!r}: its host "
                        f"{gitops.host_and_path[0]!r} is neither GitHub's nor GitLab's, so the Backstage templates "
                        "cannot tell which pull-request action to use; allowed: github, gitlab")
    return problems


def argocd_project(catalog: Catalog, team: str) -> dict[str, Any]:
    """The team's AppProject: its Application may sync only the GitOps repository, into the team's namespace, and
    only RayServices and SparkApplications (an empty clusterResourceWhitelist: nothing cluster-scoped)."""
    gitops = catalog.gitops
    namespace = catalog.teams[team].namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "AppProject",
        "metadata": {"name": project_name(catalog, team), "namespace": gitops.argocd.namespace,
                     "labels": labels(**{TEAM_LABEL: team})},
        "spec": {
            # At most 63 + 63 characters of names: within the CRD's 255.
            "description": f"Team {team}: RayServices and SparkApplications from the GitOps repository, into "
                           f"namespace {namespace} only (rendered by mlplatform)",
            "sourceRepos": [gitops.repository],
            "destinations": [{"server": IN_CLUSTER, "namespace": namespace}],
            "clusterResourceWhitelist": [],
            "namespaceResourceWhitelist": [{"group": group, "kind": kind} for group, kind in PERMITTED_KINDS],
        },
    }


def argocd_projects(catalog: Catalog) -> list[dict[str, Any]]:
    """One AppProject per team; none without `gitops` or when `gitops.argocd.project` names the project."""
    if catalog.gitops is None or catalog.gitops.argocd.project is not None:
        return []
    return [argocd_project(catalog, team) for team in catalog.teams]


def argocd_applications(catalog: Catalog) -> list[dict[str, Any]]:
    """One Application per team (none without `gitops`)."""
    if catalog.gitops is None:
        return []
    return [argocd_application(catalog, team) for team in catalog.teams]
