"""The catalog's `gitops` section and the Argo CD AppProjects and Applications `mlplatform render` makes of it:
whole documents, refusals that name the key, the value and what is allowed, and validation against the Argo CD
CRDs."""

import copy
import hashlib
import re
from pathlib import Path

import pytest
import yaml

from mlplatform_core.catalog import CatalogError, parse_catalog
from hub_config.render.build import documents, render
from hub_config.render.checks import RenderError
from hub_config.render.cli import main
from hub_config.render.gitops import argocd_applications, argocd_projects, gitops_problems

from ..support import crd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "helm-values" / "platform.yaml"
EXAMPLE_DATA = yaml.safe_load(EXAMPLE.read_text())
GITOPS = {
    "repository": "https://github.com/example/ml-deployments.git",
    "branch": "main",
    "paths": {"serving": "teams/{team}/serving/{name}.yaml", "spark": "teams/{team}/spark/{name}.yaml"},
    "committer": {"name": "mlplatform", "email": "mlplatform@example.org"},
    "mode": "review",
    "commit_url": "https://github.com/example/ml-deployments/commit/{sha}",
}
MANAGED = {"app.kubernetes.io/managed-by": "mlplatform", "app.kubernetes.io/part-of": "mlplatform"}


def catalog_with(gitops=GITOPS):
    data = copy.deepcopy(EXAMPLE_DATA)
    if gitops is not None:
        data["gitops"] = copy.deepcopy(gitops)
    return parse_catalog(data, str(EXAMPLE), environ={})


CATALOG = catalog_with()


def test_one_application_per_team_namespace_syncing_the_teams_directory():
    vision, nlp = argocd_applications(CATALOG)
    assert vision == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "mlplatform-team-vision", "namespace": "argocd",
                     "labels": {**MANAGED, "mlplatform.io/team": "team-vision"}},
        "spec": {
            "project": "mlplatform-team-vision",  # the team's own AppProject (below)
            "source": {"repoURL": "https://github.com/example/ml-deployments.git", "targetRevision": "main",
                       "path": "teams/team-vision",
                       # only the kinds' files: anything else in the directory is never applied
                       "directory": {"include": "{serving/*.yaml,spark/*.yaml}", "recurse": True}},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "team-vision"},
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True, "allowEmpty": True},
                "syncOptions": ["CreateNamespace=false", "PrunePropagationPolicy=foreground",
                                "FailOnSharedResource=true", "ServerSideApply=true"],
                "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "5m"}},
            },
        },
    }
    assert nlp["spec"]["destination"]["namespace"] == "team-nlp"
    assert nlp["spec"]["source"]["path"] == "teams/team-nlp"
    assert nlp["spec"]["project"] == "mlplatform-team-nlp"
    for application in (vision, nlp):
        assert crd.errors(application) == []


def test_one_appproject_per_team_permitting_only_the_repository_its_namespace_and_the_platforms_kinds():
    """Argo CD's `default` project permits every namespace and kind: a file in team-vision's directory naming
    team-nlp's namespace, or a RoleBinding, would be applied. Each team's project permits neither."""
    vision, nlp = argocd_projects(CATALOG)
    assert vision == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "mlplatform-team-vision", "namespace": "argocd",
                     "labels": {**MANAGED, "mlplatform.io/team": "team-vision"}},
        "spec": {
            "description": "Team team-vision: RayServices and SparkApplications from the GitOps repository, into "
                           "namespace team-vision only (rendered by mlplatform)",
            "sourceRepos": ["https://github.com/example/ml-deployments.git"],
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "team-vision"}],
            "clusterResourceWhitelist": [],  # empty: no cluster-scoped kind at all
            "namespaceResourceWhitelist": [{"group": "ray.io", "kind": "RayService"},
                                           {"group": "sparkoperator.k8s.io", "kind": "SparkApplication"}],
        },
    }
    assert nlp["metadata"]["name"] == "mlplatform-team-nlp"
    assert nlp["spec"]["destinations"] == [{"server": "https://kubernetes.default.svc", "namespace": "team-nlp"}]
    # Each Application is in its team's project, with the project's repository and destination.
    for project, application in zip((vision, nlp), argocd_applications(CATALOG)):
        assert crd.errors(project) == []
        assert application["spec"]["project"] == project["metadata"]["name"]
        assert application["metadata"]["namespace"] == project["metadata"]["namespace"]
        assert project["spec"]["sourceRepos"] == [application["spec"]["source"]["repoURL"]]
        assert project["spec"]["destinations"] == [application["spec"]["destination"]]

    # The longest names a catalog allows still fit the CRD's description (at most 255 characters).
    team = CATALOG.teams["team-vision"].model_copy(update={"namespace": "n" * 63})
    [project] = argocd_projects(CATALOG.model_copy(update={"teams": {"t" * 63: team}}))
    assert crd.errors(project) == []


def test_one_directory_per_team_a_manual_sync_and_another_project_and_namespace():
    catalog = catalog_with({**GITOPS, "paths": {"serving": "{namespace}/{name}.rayservice.yaml",
                                                "spark": "{namespace}/{name}.spark.yaml"},
                            "argocd": {"namespace": "gitops", "project": "ml-teams",
                                       "sync_policy": {"automated": False, "sync_options": []}}})
    [vision, _] = argocd_applications(catalog)
    assert vision["metadata"]["namespace"] == "gitops"
    assert vision["spec"]["project"] == "ml-teams"
    # A project named in the catalog is the cluster's: none is rendered, every Application uses it.
    assert argocd_projects(catalog) == []
    assert [app["kind"] for app in documents(catalog)["gitops/argocd-applications.yaml"][1]] == ["Application"] * 2
    assert {app["spec"]["project"] for app in argocd_applications(catalog)} == {"ml-teams"}
    assert vision["spec"]["source"] == {
        "repoURL": "https://github.com/example/ml-deployments.git", "targetRevision": "main", "path": "team-vision",
        "directory": {"include": "{*.rayservice.yaml,*.spark.yaml}"}}
    assert vision["spec"]["syncPolicy"] == {"retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2,
                                                                             "maxDuration": "5m"}}}
    assert crd.errors(vision) == []


def test_the_vendored_appproject_crd_is_upstreams_byte_for_byte():
    folder = ROOT / "tests" / "data" / "argo-cd"
    [recorded] = re.findall(r"sha256: `([0-9a-f]{64})`", (folder / "README.md").read_text())
    assert hashlib.sha256((folder / "argoproj.io_appprojects.yaml").read_bytes()).hexdigest() == recorded


def test_the_strict_crd_refuses_a_misspelled_field():
    [vision, _] = argocd_applications(CATALOG)
    vision["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    assert crd.errors(vision) == ["spec.syncPolicy.automated: Additional properties are not allowed "
                                  "('selfheal' was unexpected)"]
    [project, _] = argocd_projects(CATALOG)
    project["spec"]["namespaceResourceWhiteList"] = project["spec"].pop("namespaceResourceWhitelist")
    project["spec"]["description"] = "x" * 256
    assert crd.errors(project) == ["spec.description: 'xxx...' is too long".replace("xxx...", "x" * 256),
                                   "spec: Additional properties are not allowed ('namespaceResourceWhiteList' was "
                                   "unexpected)"]


def test_paths_branches_and_links_have_one_spelling():
    gitops = CATALOG.gitops
    assert gitops.path("serving", team="team-vision", namespace="team-vision", name="iris") == \
        "teams/team-vision/serving/iris.yaml"
    assert gitops.path("catalog_info", team="team-nlp", namespace="team-nlp", name="llm") == \
        "catalog-info/team-nlp/llm.yaml"
    assert gitops.review_branch("spark", team="team-nlp", name="wordcount") == "mlplatform/team-nlp/spark/wordcount"
    assert gitops.commit_link("0a1b2c") == "https://github.com/example/ml-deployments/commit/0a1b2c"
    assert catalog_with({**GITOPS, "commit_url": None}).gitops.commit_link("0a1b2c") is None
    assert gitops.host_and_path == ("github.com", "example/ml-deployments")
    assert catalog_with({**GITOPS, "repository": "git@gitlab.example.org:ml/platform/deployments.git"}).gitops \
        .host_and_path == ("gitlab.example.org", "ml/platform/deployments")


@pytest.mark.parametrize("change, message", [
    ({"paths": {"serving": "teams/{team}/serving/{model}.yaml"}},
     "gitops.paths.serving: 'teams/{team}/serving/{model}.yaml' is not allowed: {model} is not a placeholder; "
     "allowed: {team}, {namespace}, {name}"),
    ({"paths": {"spark": "teams/{team}/{name}/job.yaml"}},
     "gitops.paths.spark: 'teams/{team}/{name}/job.yaml' is not allowed: must have {name} once, in the file name"),
    ({"paths": {"serving": "serving/{name}.yaml"}},
     "gitops.paths.serving: 'serving/{name}.yaml' is not allowed: must have {team} or {namespace} in a directory"),
    ({"paths": {"serving": "teams/{team}/serving/{name}.json"}},
     "gitops.paths.serving: 'teams/{team}/serving/{name}.json' is not allowed: must name a .yaml file"),
    ({"paths": {"serving": "/teams/{team}/{name}.yaml"}},
     "gitops.paths.serving: '/teams/{team}/{name}.yaml' is not allowed: must be a relative path"),
    ({"paths": {"serving": "serving/{team}/{name}.yaml", "spark": "spark/{team}/{name}.yaml"}},
     "share no directory of the team"),
    ({"paths": {"serving": "t/{team}/{name}.yaml", "spark": "t/{team}/{name}.yaml"}},
     "serving and spark are both 't/{team}/{name}.yaml'"),
    ({"mode": "push"}, "gitops.mode: 'push' is not allowed: Input should be 'direct' or 'review'"),
    ({"repository": "ftp://example.org/deployments"},
     "gitops.repository: 'ftp://example.org/deployments' is not allowed: not a Git repository URL; allowed: "
     "https://host/owner/repo.git"),
    ({"branch": "main branch"}, "gitops.branch: 'main branch' is not allowed: not a branch name git accepts"),
    ({"committer": {"name": "mlplatform", "email": "mlplatform"}},
     "gitops.committer.email: 'mlplatform' is not allowed: not an e-mail address"),
    ({"commit_url": "https://github.com/example/ml-deployments/commits"},
     "gitops.commit_url: 'https://github.com/example/ml-deployments/commits' is not allowed: must be an http(s) URL "
     "with {sha} once"),
    ({"argocd": {"sync_policy": {"sync_options": ["prune last"]}}},
     "gitops.argocd.sync_policy.sync_options: ['prune last'] is not allowed: 'prune last' is not an Argo CD sync "
     "option; allowed: Key=Value"),
    ({"argocd": {"namespace": "Argo_CD"}}, "gitops.argocd.namespace: 'Argo_CD' is not allowed: must be a DNS label"),
    ({"argocd": {"project": "ML_Teams"}}, "gitops.argocd.project: 'ML_Teams' is not allowed: must be a DNS label"),
    ({"argocd": {"auto_sync": True}},
     "gitops.argocd.auto_sync: unknown key 'auto_sync'; allowed keys: namespace, project, sync_policy"),
])
def test_bad_gitops_values_are_refused_naming_the_key_the_value_and_what_is_allowed(change, message):
    with pytest.raises(CatalogError) as refused:
        catalog_with({**GITOPS, **change})
    assert any(message in problem for problem in refused.value.problems), refused.value.problems


def test_render_refuses_an_argocd_namespace_of_a_team_and_a_host_of_unknown_pull_requests():
    catalog = catalog_with({**GITOPS, "repository": "https://git.example.org/ml/deployments.git",
                            "argocd": {"namespace": "team-nlp"}})
    with pytest.raises(RenderError) as refused:
        render(catalog)
    assert refused.value.problems == [
        "gitops.argocd.namespace: 'team-nlp' is not allowed: it is team team-nlp's namespace; allowed: the namespace "
        "Argo CD runs in, e.g. 'argocd' (Applications there are Argo CD's to manage)",
        "gitops.provider: unset is not allowed for 'https://git.example.org/ml/deployments.git': its host "
        "'git.example.org' is neither GitHub's nor GitLab's, so the Backstage templates cannot tell which "
        "pull-request action to use; allowed: github, gitlab"]
    assert gitops_problems(catalog_with({**GITOPS, "repository": "https://git.example.org/ml/deployments.git",
                                         "provider": "gitlab"})) == []


def test_render_writes_the_applications_and_templates_only_with_gitops_and_drops_them_without(tmp_path):
    with_gitops = tmp_path / "with-gitops.yaml"
    with_gitops.write_text(yaml.safe_dump({**EXAMPLE_DATA, "gitops": GITOPS}, sort_keys=False))
    assert main(["render", "--catalog", str(with_gitops), "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert [p for p in written if p.startswith(("gitops/", "backstage/"))] == [
        "backstage/templates/ray-service/skeleton/catalog-info/${{values.team}}/${{values.name}}.yaml",
        "backstage/templates/ray-service/skeleton/teams/${{values.team}}/serving/${{values.name}}.yaml",
        "backstage/templates/ray-service/template.yaml",
        "backstage/templates/spark-job/skeleton/teams/${{values.team}}/spark/${{values.name}}.yaml",
        "backstage/templates/spark-job/template.yaml",
        "gitops/argocd-applications.yaml"]
    text = (tmp_path / "out" / "gitops" / "argocd-applications.yaml").read_text()
    assert text.startswith(
        "# Argo CD Applications: each team namespace syncs its directory of the GitOps repository (catalog `gitops`).\n"
        "# First each team's AppProject (unless gitops.argocd.project names one): only the team's namespace, only\n"
        "# RayServices and SparkApplications.\n"
        "# Rendered by `mlplatform render` from with-gitops.yaml; do not edit: change the catalog and render again.\n"
        "# kubectl apply -n argocd -f gitops/\n---\napiVersion: argoproj.io/v1alpha1\nkind: AppProject\n")
    # One file, the projects first: `kubectl apply -f gitops/` makes each project before the Application naming it.
    rendered = list(yaml.safe_load_all(text))
    assert rendered == argocd_projects(catalog_with()) + argocd_applications(catalog_with())
    assert [d["kind"] for d in rendered] == ["AppProject", "AppProject", "Application", "Application"]

    # Without gitops: nothing of it is rendered, and an earlier render's files go.
    assert not any(path.startswith(("gitops/", "backstage/")) for path in documents(catalog_with(None)))
    assert main(["render", "--catalog", str(EXAMPLE), "--out", str(tmp_path / "out")]) == 0
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and
                p.relative_to(tmp_path / "out").parts[0] in ("gitops", "backstage")]


def test_a_repository_without_an_owner_is_a_catalog_but_no_backstage_template():
    catalog = catalog_with({**GITOPS, "repository": "http://127.0.0.1:18700/deployments.git", "provider": "github"})
    assert catalog.gitops.host_and_path == ("127.0.0.1", "deployments")
    assert gitops_problems(catalog) == [
        "gitops.repository: 'http://127.0.0.1:18700/deployments.git' is not allowed here: the Backstage templates' "
        "pull-request actions name a repository by owner and name; allowed: e.g. "
        "'https://127.0.0.1/<owner>/deployments.git'"]


def test_the_example_catalogs_commented_gitops_section_is_a_valid_one():
    commented = EXAMPLE.read_text().split("# gitops:\n", 1)[1]
    section = yaml.safe_load("gitops:\n" + "\n".join(line.removeprefix("# ") for line in commented.splitlines()))
    assert section["gitops"] == {**GITOPS, "mode": "direct", "review_branch_prefix": "mlplatform",
                                 "paths": {**GITOPS["paths"], "catalog_info": "catalog-info/{team}/{name}.yaml"},
                                 "argocd": {"namespace": "argocd", "sync_policy": {
                                     "automated": True, "prune": True, "self_heal": True}}}
    # The defaults: no project named, so an AppProject per team is rendered.
    assert catalog_with(section["gitops"]).gitops == catalog_with({**GITOPS, "mode": "direct"}).gitops
