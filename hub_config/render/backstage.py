"""Backstage Software Templates of the golden paths (`Ray Service`, `Spark job`) from the catalog's `gitops` section.

Each template asks for what the notebook's widgets ask for, fetches its skeleton (fetch:template) into a tree laid
out like the GitOps repository and opens a pull request (GitLab: a merge request) with it against `gitops.branch`.
Always a pull request, in `mode: direct` too: Backstage writes with its own integration's credentials, outside the
platform service, so a person (and the repository's branch protection) stands between a form and the cluster;
Backstage also has no built-in action that pushes files to an existing repository's branch. Once merged, the
team's Argo CD Application (gitops.py) applies the file.

The skeletons are the project's own builders' objects (`KubernetesServing.manifest`, `KubernetesSparkBackend.
manifest`, for a stand-in team, user and inputs) written with their template expressions (skeleton.py): for the
same inputs they render to the object the notebook's Kubernetes path applies, without the annotations that
record one deploy or submission (who, when, the request as typed), which a commit records instead.
"""

from __future__ import annotations

import json
from typing import Any

from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig
from mlplatform.serving.spec import serving_request
from mlplatform.spark.job import SparkJob
from mlplatform.spark.kubernetes import KubernetesSparkBackend, KubernetesSparkConfig
from mlplatform_core.catalog import Catalog
from mlplatform_core.contract import FORWARDED_TO_SERVING, PlatformEnvironment
from mlplatform_core.names import MAX_SERVING_NAME, MAX_SPARK_NAME

from .skeleton import StandIn, nunjucks_yaml

TEMPLATE_API = "scaffolder.backstage.io/v1beta3"
ENTITY_API = "backstage.io/v1alpha1"
WORKSPACE = "./gitops"  # where fetch:template writes the repository's files, and what the pull request carries
NAME_RULE = "lowercase letters, digits and '-', starting with a letter, ending with a letter or digit"
SPARK_MEMORY = r"^([1-9][0-9]*[gt]|(51[2-9]|5[2-9][0-9]|[6-9][0-9]{2}|[1-9][0-9]{3,})m)$"  # Spark's syntax, ≥ 512m
MAIN_FILE = r"^(s3a|local|https)://\S+\.py$"

# Stand-ins: what the builders get where the template's values go (each unlike anything a catalog holds).
NAME, TEAM, NAMESPACE, GROUP, USER = "xnamex", "xteamx", "xnsx", "xgroupx", "xuserx"
MODEL, ALIAS, VERSION = "xmodelx", "xaliasx", "90817263"
MAIN_FILE_STAND_IN, MEMORY_STAND_IN = "s3a://xmainx/xmainx.py", "97531m"
REPLICAS, MAX_TOKENS, EXECUTORS = 70001, 90001, 80021
REQUESTED = ('(("models:/" + values.model_name + "@" + values.model_alias) if values.model_alias '
             'else ("models:/" + values.model_name + "/" + values.model_version))')
COMMON = [StandIn(NAME, "values.name"), StandIn(TEAM, "values.team"), StandIn(NAMESPACE, "values.namespace"),
          StandIn(USER, "values.user")]


# --- what the notebook's Kubernetes path applies (also the tests' expected objects) ------------------------------

def notebook_environment(catalog: Catalog, *, team: str, user: str) -> PlatformEnvironment:
    """The environment contract the hub gives `user`'s server of `team` (what the backends forward to pods)."""
    return PlatformEnvironment.for_server(catalog, user=user, team=team, profile="", gpu_type=None, gpu_count=0,
                                          aws_config_file="", hub_api_url="http://hub")


def ray_service_manifest(catalog: Catalog, *, team: str, user: str, name: str, model_name: str,
                         model_version: str, model_alias: str | None, replicas: int, max_tokens: int,
                         limits=None) -> dict[str, Any]:
    """The RayService ServeModel's Kubernetes backend applies for these inputs (the alias resolved to
    `model_version`), without the annotations of one deploy."""
    environment = notebook_environment(catalog, team=team, user=user)
    requested = f"models:/{model_name}@{model_alias}" if model_alias else f"models:/{model_name}/{model_version}"
    request = serving_request(name=name, model_uri=requested, replicas=replicas, max_tokens_limit=max_tokens,
                              limits=limits or catalog.serving)
    config = KubernetesServingConfig.for_catalog(catalog, namespace=environment.namespace, team=team, user=user)
    return KubernetesServing(config).manifest(request, model_version=model_version,
                                              env=environment.variables(FORWARDED_TO_SERVING),
                                              owner={"user": user, "team": team})


def spark_application_manifest(catalog: Catalog, *, team: str, user: str, name: str, main_file: str,
                               executors: int, executor_memory: str) -> dict[str, Any]:
    """The SparkApplication SubmitSparkJob's Kubernetes backend creates for these inputs (application id: the
    name, as one file per job in Git holds it), without the annotations of one submission."""
    environment = notebook_environment(catalog, team=team, user=user)
    s3 = catalog.storage.s3
    config = KubernetesSparkConfig.for_catalog(catalog, KubernetesSparkConfig(
        namespace=environment.namespace, team=team, user=user, bucket=s3.bucket,
        team_prefix=environment.s3_team_prefix, s3_endpoint=s3.endpoint_url))
    job = SparkJob(name=name, main_file=main_file, executors=executors, executor_memory=executor_memory)
    return KubernetesSparkBackend(config, environment=environment).manifest(job, app_id=name)


def model_component(catalog: Catalog, *, team: str, group: str, namespace: str, name: str, model_name: str,
                    model_version: str) -> dict[str, Any]:
    """The Backstage Component of a served model: owned by the team's group, linking its endpoint, the MLflow
    model and the version's page, where its model card's fields (catalog promotion.model_card_fields) are tags."""
    mlflow = catalog.mlflow.tracking_uri.rstrip("/")
    # Where callers reach it: the notebook's own URL of the endpoint (the team's gateway).
    endpoint = KubernetesServing(KubernetesServingConfig.for_catalog(catalog, namespace=namespace, team=team,
                                                                     user="")).url(name)
    return {
        "apiVersion": ENTITY_API,
        "kind": "Component",
        "metadata": {
            "name": name,
            "description": f"Model {model_name} served by Ray Serve in namespace {namespace}",
            "annotations": {"backstage.io/kubernetes-namespace": namespace,
                            "backstage.io/kubernetes-label-selector": f"app.kubernetes.io/name={name}"},
            "tags": ["mlplatform", "model-serving"],
            "links": [{"url": endpoint, "title": "Endpoint", "icon": "cloud"},
                      {"url": f"{mlflow}/#/models/{model_name}", "title": "MLflow model", "icon": "catalog"},
                      {"url": f"{mlflow}/#/models/{model_name}/versions/{model_version}", "title": "Model card",
                       "icon": "docs"}],
        },
        "spec": {"type": "service", "lifecycle": "production", "owner": f"group:{group}", "system": "mlplatform"},
    }


# --- skeletons ---------------------------------------------------------------------------------------------------

def _stand_in_catalog(catalog: Catalog) -> Catalog:
    """`catalog` with one team, the stand-in team in the stand-in namespace (its other settings the first team's)."""
    first = next(iter(catalog.teams.values()))
    return catalog.model_copy(update={"teams": {TEAM: first.model_copy(update={"namespace": NAMESPACE,
                                                                                "group": GROUP})}})


def ray_service_skeleton(catalog: Catalog) -> str:
    stand_in = _stand_in_catalog(catalog)
    manifest = ray_service_manifest(stand_in, team=TEAM, user=USER, name=NAME, model_name=MODEL,
                                    model_version=VERSION, model_alias=ALIAS, replicas=REPLICAS,
                                    max_tokens=MAX_TOKENS,
                                    limits=catalog.serving.model_copy(update={"max_replicas": 10 * REPLICAS}))
    return nunjucks_yaml(manifest, [*COMMON, StandIn(f"models:/{MODEL}@{ALIAS}", REQUESTED),
                                    StandIn(MODEL, "values.model_name"), StandIn(VERSION, "values.model_version"),
                                    StandIn(REPLICAS, "values.replicas"), StandIn(MAX_TOKENS, "values.max_tokens")])


def spark_application_skeleton(catalog: Catalog) -> str:
    manifest = spark_application_manifest(_stand_in_catalog(catalog), team=TEAM, user=USER, name=NAME,
                                          main_file=MAIN_FILE_STAND_IN, executors=EXECUTORS,
                                          executor_memory=MEMORY_STAND_IN)
    return nunjucks_yaml(manifest, [*COMMON, StandIn(MAIN_FILE_STAND_IN, "values.main_file"),
                                    StandIn(MEMORY_STAND_IN, "values.executor_memory"),
                                    StandIn(EXECUTORS, "values.executors")])


def component_skeleton(catalog: Catalog) -> str:
    component = model_component(catalog, team=TEAM, group=GROUP, namespace=NAMESPACE, name=NAME, model_name=MODEL,
                                model_version=VERSION)
    return nunjucks_yaml(component, [*COMMON, StandIn(GROUP, "values.group"), StandIn(MODEL, "values.model_name"),
                                     StandIn(VERSION, "values.model_version")])


def skeleton_path(template: str) -> str:
    """A path template of the catalog (`teams/{team}/serving/{name}.yaml`) as fetch:template's file name."""
    return template.format(team="${{values.team}}", namespace="${{values.namespace}}", name="${{values.name}}")


# --- templates ---------------------------------------------------------------------------------------------------

def _lookup(catalog: Catalog, attribute: str) -> str:
    """A nunjucks expression: the chosen namespace's team (or its Keycloak group)."""
    table = {team.namespace: (name if attribute == "team" else team.group) for name, team in catalog.teams.items()}
    return "${{ " + json.dumps(table) + "[parameters.namespace] }}"


def _namespace_field(catalog: Catalog) -> dict[str, Any]:
    teams = catalog.teams.values()
    return {"title": "Namespace", "description": "Your team's namespace: the application runs there, on its quota",
            "type": "string", "enum": [t.namespace for t in teams],
            "enumNames": [t.display_name or name for name, t in catalog.teams.items()]}


def _name_field(what: str, longest: int) -> dict[str, Any]:
    return {"title": "Name", "description": f"The {what}'s name: {NAME_RULE}, at most {longest} characters",
            "type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": longest, "ui:autofocus": True}


def _publish(catalog: Catalog, kind: str, title: str) -> tuple[dict[str, Any], str]:
    """The pull-request step and the expression of the pull request's URL."""
    gitops = catalog.gitops
    host, path = gitops.host_and_path
    owner, _, repo = path.rpartition("/")
    branch = gitops.review_branch_prefix + "/" + _lookup(catalog, "team") + f"/{kind}/" + "${{ parameters.name }}"
    provider = gitops.pull_request_provider
    step: dict[str, Any] = {"id": "publish", "name": "Open the pull request"}
    inputs = {"repoUrl": f"{host}?owner={owner}&repo={repo}", "branchName": branch,
              "targetBranchName": gitops.branch, "title": title, "sourcePath": WORKSPACE,
              "description": f"{title}, from Backstage by ${{{{ user.entity.metadata.name }}}}. Once merged, Argo CD "
                             "applies it to the namespace."}
    if provider == "gitlab":
        step["action"] = "publish:gitlab:merge-request"
        inputs = {**inputs, "removeSourceBranch": True}
        url = "${{ steps.publish.output.mergeRequestUrl }}"
    else:
        step["action"] = "publish:github:pull-request"
        url = "${{ steps.publish.output.remoteUrl }}"
    step["input"] = inputs
    return step, url


def _template(catalog: Catalog, *, name: str, title: str, description: str, tags: list[str], kind: str,
              parameters: dict[str, Any], values: dict[str, Any], pr_title: str) -> dict[str, Any]:
    publish, url = _publish(catalog, kind, pr_title)
    return {
        "apiVersion": TEMPLATE_API,
        "kind": "Template",
        "metadata": {"name": name, "title": title, "description": description, "tags": ["mlplatform", *tags]},
        "spec": {
            "type": "service",
            "parameters": [parameters],
            "steps": [
                {"id": "fetch", "name": "Write the manifest", "action": "fetch:template",
                 "input": {"url": "./skeleton", "targetPath": WORKSPACE, "values": {
                     "name": "${{ parameters.name }}", "namespace": "${{ parameters.namespace }}",
                     "team": _lookup(catalog, "team"), "group": _lookup(catalog, "group"),
                     "user": "${{ user.entity.metadata.name }}", **values}}},
                publish,
            ],
            "output": {"links": [{"title": "Pull request", "url": url}]},
        },
    }


def ray_service_template(catalog: Catalog) -> dict[str, Any]:
    properties = {
        "name": _name_field("application", MAX_SERVING_NAME),
        "namespace": _namespace_field(catalog),
        "replicas": {"title": "Worker replicas", "type": "integer", "minimum": 1,
                     "maximum": catalog.serving.max_replicas, "default": 1},
        "model_name": {"title": "Registered model", "description": "The model's name in the MLflow registry",
                       "type": "string", "pattern": "^[^/@]+$"},
        "model_version": {"title": "Model version", "description": "The registered version to serve (the one the "
                          "alias points to, if you give an alias): the endpoint stays on it when the alias moves",
                          "type": "string", "pattern": "^[0-9]+$"},
        "model_alias": {"title": "Alias (optional)", "description": "Recorded as what you asked for, e.g. champion",
                        "type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
        "max_tokens": {"title": "Max tokens", "description": "The most tokens one /generate request may ask for",
                       "type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 4096},
    }
    return _template(
        catalog, name="mlplatform-ray-service", title="Ray Service", tags=["ray", "serving"], kind="serving",
        description="Serve a registered MLflow model with Ray Serve in your team's namespace: a pull request to the "
                    "GitOps repository with the RayService the notebook's ServeModel would deploy.",
        parameters={"title": "Model endpoint", "required": ["name", "namespace", "replicas", "model_name",
                                                            "model_version", "max_tokens"],
                    "properties": properties},
        values={"replicas": "${{ parameters.replicas }}", "model_name": "${{ parameters.model_name }}",
                "model_version": "${{ parameters.model_version }}", "model_alias": "${{ parameters.model_alias }}",
                "max_tokens": "${{ parameters.max_tokens }}"},
        pr_title="Serve ${{ parameters.model_name }} as ${{ parameters.name }} in ${{ parameters.namespace }}")


def spark_job_template(catalog: Catalog) -> dict[str, Any]:
    properties = {
        "name": _name_field("job", MAX_SPARK_NAME),
        "namespace": _namespace_field(catalog),
        "main_file": {"title": "Main file", "description": "The PySpark application's .py file, where the driver "
                      "pod reads it: s3a://bucket/key.py, local:///path/in/the/image.py or https://...",
                      "type": "string", "pattern": MAIN_FILE},
        "executors": {"title": "Executors", "type": "integer", "minimum": 1, "default": 1},
        "executor_memory": {"title": "Executor memory", "description": "Spark's syntax, at least 512m: e.g. 512m, 2g",
                            "type": "string", "pattern": SPARK_MEMORY, "default": "1g"},
    }
    return _template(
        catalog, name="mlplatform-spark-job", title="Spark job", tags=["spark", "data"], kind="spark",
        description="Run a PySpark application in your team's namespace: a pull request to the GitOps repository "
                    "with the SparkApplication the notebook's SubmitSparkJob would submit.",
        parameters={"title": "Spark job", "required": ["name", "namespace", "main_file", "executors",
                                                       "executor_memory"], "properties": properties},
        values={"main_file": "${{ parameters.main_file }}", "executors": "${{ parameters.executors }}",
                "executor_memory": "${{ parameters.executor_memory }}"},
        pr_title="Spark job ${{ parameters.name }} in ${{ parameters.namespace }}")


def backstage_files(catalog: Catalog) -> dict[str, tuple[str, Any]]:
    """Relative path under backstage/ → ('yaml', a document) or ('text', a skeleton); nothing without `gitops`."""
    if catalog.gitops is None:
        return {}
    paths = catalog.gitops.paths
    return {
        "templates/ray-service/template.yaml": ("yaml", ray_service_template(catalog)),
        f"templates/ray-service/skeleton/{skeleton_path(paths.serving)}": ("text", ray_service_skeleton(catalog)),
        f"templates/ray-service/skeleton/{skeleton_path(paths.catalog_info)}": ("text", component_skeleton(catalog)),
        "templates/spark-job/template.yaml": ("yaml", spark_job_template(catalog)),
        f"templates/spark-job/skeleton/{skeleton_path(paths.spark)}": ("text", spark_application_skeleton(catalog)),
    }
