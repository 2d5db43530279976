"""The Backstage Software Templates `mlplatform render` writes: they validate against Backstage's schemas, and their
skeletons, rendered by npm's nunjucks as Backstage's scaffolder renders them, are the very objects the notebook's
Kubernetes path makes for the same inputs (and pass the KubeRay / Spark operator CRDs)."""

import pytest
import yaml

from hub_config.render.backstage import (backstage_files, model_component, ray_service_manifest,
                                         spark_application_manifest)
from hub_config.render.build import render
from hub_config.render.skeleton import SkeletonError, StandIn, nunjucks_yaml

from ..support import backstage, crd
from .test_render_gitops import CATALOG, GITOPS, catalog_with

FILES = backstage_files(CATALOG)
RAY, SPARK = "templates/ray-service/", "templates/spark-job/"


def template_and_skeleton(folder):
    [template] = [content for path, (_, content) in FILES.items() if path == f"{folder}template.yaml"]
    skeleton = {path.removeprefix(f"{folder}skeleton/"): content for path, (form, content) in FILES.items()
                if path.startswith(f"{folder}skeleton/")}
    return template, skeleton


def parsed(text):
    """A rendered manifest as data; a RayService's serveConfigV2 as the Serve config it holds (KubeRay parses it)."""
    obj = yaml.safe_load(text)
    if obj.get("kind") == "RayService":
        obj["spec"]["serveConfigV2"] = yaml.safe_load(obj["spec"]["serveConfigV2"])
    return obj


def test_the_templates_validate_against_backstages_template_schema():
    for folder in (RAY, SPARK):
        template, _ = template_and_skeleton(folder)
        assert backstage.errors(template, "TemplateV1beta3") == []
    broken = {**template, "spec": {**template["spec"], "steps": [{"name": "no action"}]}}
    assert backstage.errors(broken, "TemplateV1beta3") == ["spec.steps.0: 'action' is a required property"]


def test_the_ray_service_template_asks_for_the_founding_fields_and_opens_a_pull_request():
    template, skeleton = template_and_skeleton(RAY)
    [form] = template["spec"]["parameters"]
    assert form["required"] == ["name", "namespace", "replicas", "model_name", "model_version", "max_tokens"]
    assert form["properties"]["namespace"] == {
        "title": "Namespace", "description": "Your team's namespace: the application runs there, on its quota",
        "type": "string", "enum": ["team-vision", "team-nlp"], "enumNames": ["Computer vision", "Language models"]}
    assert form["properties"]["replicas"]["maximum"] == CATALOG.serving.max_replicas
    assert [(s["id"], s["action"]) for s in template["spec"]["steps"]] == [
        ("fetch", "fetch:template"), ("publish", "publish:github:pull-request")]
    assert sorted(skeleton) == ["catalog-info/${{values.team}}/${{values.name}}.yaml",
                                "teams/${{values.team}}/serving/${{values.name}}.yaml"]
    gitlab = backstage_files(catalog_with({**GITOPS, "repository": "https://gitlab.com/ml/platform/deployments.git"}))
    publish = gitlab[f"{RAY}template.yaml"][1]["spec"]["steps"][1]
    assert (publish["action"], publish["input"]["repoUrl"]) == (
        "publish:gitlab:merge-request", "gitlab.com?owner=ml/platform&repo=deployments")


@pytest.mark.parametrize("namespace, alias", [("team-vision", "champion"), ("team-nlp", None)])
def test_the_ray_service_skeleton_renders_the_notebooks_rayservice_and_the_models_component(namespace, alias):
    template, skeleton = template_and_skeleton(RAY)
    parameters = {"name": "iris-classifier", "namespace": namespace, "replicas": 3, "model_name": "iris",
                  "model_version": "7", "max_tokens": 512, **({"model_alias": alias} if alias else {})}
    rendered = backstage.render_template(template, skeleton, parameters, user="alice")
    team = namespace  # the example catalog's teams are named as their namespaces
    gitops = CATALOG.gitops
    manifest_path = gitops.path("serving", team=team, namespace=namespace, name="iris-classifier")
    component_path = gitops.path("catalog_info", team=team, namespace=namespace, name="iris-classifier")
    assert sorted(rendered["files"]) == sorted([component_path, manifest_path])

    expected = ray_service_manifest(CATALOG, team=team, user="alice", name="iris-classifier", model_name="iris",
                                    model_version="7", model_alias=alias, replicas=3, max_tokens=512)
    got = parsed(rendered["files"][manifest_path])
    assert got == parsed(yaml.safe_dump(expected))
    assert got["metadata"]["annotations"]["mlplatform.io/model-uri"] == (
        f"models:/iris@{alias}" if alias else "models:/iris/7")
    assert crd.errors(yaml.safe_load(rendered["files"][manifest_path])) == []

    component = yaml.safe_load(rendered["files"][component_path])
    assert component == model_component(CATALOG, team=team, group=CATALOG.teams[team].group, namespace=namespace,
                                        name="iris-classifier", model_name="iris", model_version="7")
    assert component["spec"]["owner"] == f"group:{team}"
    assert [link["url"] for link in component["metadata"]["links"]] == [
        f"http://mlplatform-gateway-{team}.jupyterhub.svc.cluster.local:8000/iris-classifier",  # the team's gateway
        "https://mlflow.example.org/#/models/iris", "https://mlflow.example.org/#/models/iris/versions/7"]
    assert backstage.errors(component) == []

    publish = rendered["inputs"][1]
    assert publish["branchName"] == gitops.review_branch("serving", team=team, name="iris-classifier")
    assert (publish["targetBranchName"], publish["sourcePath"]) == ("main", "./gitops")
    assert publish["title"] == f"Serve iris as iris-classifier in {namespace}"


def test_the_spark_skeleton_renders_the_notebooks_sparkapplication():
    template, skeleton = template_and_skeleton(SPARK)
    [form] = template["spec"]["parameters"]
    assert form["required"] == ["name", "namespace", "main_file", "executors", "executor_memory"]
    parameters = {"name": "wordcount", "namespace": "team-nlp", "main_file": "s3a://ml-platform-example/teams/"
                  "team-nlp/jobs/wordcount.py", "executors": 4, "executor_memory": "2g"}
    rendered = backstage.render_template(template, skeleton, parameters, user="bob")
    path = CATALOG.gitops.path("spark", team="team-nlp", namespace="team-nlp", name="wordcount")
    assert list(rendered["files"]) == [path]
    expected = spark_application_manifest(CATALOG, team="team-nlp", user="bob", name="wordcount",
                                          main_file=parameters["main_file"], executors=4, executor_memory="2g")
    got = yaml.safe_load(rendered["files"][path])
    assert got == expected
    assert (got["spec"]["executor"]["instances"], got["spec"]["executor"]["memory"]) == (4, "2g")
    assert crd.errors(got) == []
    assert rendered["inputs"][1]["branchName"] == "mlplatform/team-nlp/spark/wordcount"


def test_the_templates_rendered_files_are_the_templates_and_their_skeletons():
    files = render(CATALOG)
    template = yaml.safe_load(files[f"backstage/{RAY}template.yaml"])
    assert template == FILES[f"{RAY}template.yaml"][1]
    skeleton = "backstage/templates/spark-job/skeleton/teams/${{values.team}}/spark/${{values.name}}.yaml"
    assert files[skeleton] == FILES[skeleton.removeprefix("backstage/")][1]
    assert files[skeleton].startswith("apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\n")


def test_a_stand_in_the_skeleton_cannot_template_is_an_error_not_a_literal():
    with pytest.raises(SkeletonError, match="the key 'xnamex' holds a stand-in"):
        nunjucks_yaml({"labels": {"xnamex": "v"}}, [StandIn("xnamex", "values.name")])
    with pytest.raises(SkeletonError, match="holds the number stand-in 70001 inside a string"):
        nunjucks_yaml({"cpu": "70001m"}, [StandIn(70001, "values.replicas")])
    assert nunjucks_yaml({"a": ["/xnamex", 140002, {}]}, [StandIn("xnamex", "values.name"),
                                                         StandIn(70001, "values.replicas")]) == (
        'a:\n  - ${{ ("/" + values.name) | dump }}\n  - ${{ values.replicas * 2 }}\n  - {}\n')
