"""Rendered output is validated before anything is written: core objects against Kubernetes' schemas
(strict), z2jh values against the chart's schema after merging onto its values.yaml; a bad catalog
gets one message naming each catalog key, and leaves the output folder as it was."""

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from mlplatform_core.catalog import load_catalog, parse_catalog
from hub_config.catalog import DEFAULT_CATALOG
from hub_config.render.build import documents, render
from hub_config.render.checks import RenderError
from hub_config.render.cli import main
from hub_config.render.jupyterhub import jupyterhub_values
from hub_config.render.charts import merged_values
from hub_config.render.validation import object_problems, values_problems

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "helm-values" / "platform.yaml"
CHART = ROOT.parent / "shared" / "charts" / "jupyterhub"
SCHEMA = yaml.safe_load((CHART / "values.schema.yaml").read_text())
DATA = yaml.safe_load(EXAMPLE.read_text())


def render_problems(data) -> list[str]:
    with pytest.raises(RenderError) as e:
        render(parse_catalog(data, "platform.yaml", environ={}))
    assert str(e.value).startswith("cannot render platform.yaml:\n  - ")
    return e.value.problems


def test_jupyterhub_values_fit_the_chart_schema_after_merging_onto_its_defaults():
    values = jupyterhub_values(load_catalog(EXAMPLE, environ={}))
    assert values_problems("kubernetes", merged_values(CHART, values), SCHEMA) == []
    # The schema requires every top-level key: the values alone (not merged) do not pass.
    assert "'imagePullSecrets' is a required property" in values_problems("kubernetes", values, SCHEMA)[0]


def test_the_chart_schema_refuses_what_the_chart_would():
    values = jupyterhub_values(load_catalog(EXAMPLE, environ={}))
    values["singleuser"]["cpu"]["limit"] = "2"  # the chart wants a number of cores
    values["hub"]["networkPolicy"]["interNamespaceAccessLabels"] = "allow"
    assert values_problems("kubernetes", merged_values(CHART, values), SCHEMA) == [
        "kubernetes: the chart's schema refuses hub.networkPolicy.interNamespaceAccessLabels: "
        "'allow' is not one of ['accept', 'ignore']",
        "kubernetes: the chart's schema refuses singleuser.cpu.limit: '2' is not of type 'number', 'null'",
    ]


def test_every_core_object_passes_kubernetes_strict_validation():
    docs = documents(load_catalog(EXAMPLE, environ={}))
    checked = [(source, obj) for path, (source, objects) in docs.items() if not path.startswith("helm-values/")
               for obj in objects]
    # the hub's cluster RBAC, three admission policies and their bindings, the workload webhook with the role
    # and binding that let the hub set its CA, MLflow's auth.ini, three pre-pull pools, two teams of 14 objects, the
    # rollout gateways' ConfigMap and ServiceAccount, the Roles and bindings of the traffic maps (the gateways read,
    # the hub writes) and each team's gateway (Deployment, Service, NetworkPolicy)
    assert len(checked) == 2 + 6 + 3 + 1 + 3 + 2 * 14 + 2 + 4 + 2 * 3
    assert [p for source, obj in checked for p in object_problems(source, obj)] == []


def test_a_refused_object_is_reported_with_its_catalog_key():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x", "labels": {"a": 1}}}
    assert object_problems("teams.team-x", namespace) == [
        "teams.team-x: renders Namespace team-x, which Kubernetes 1.33 refuses at metadata.labels.a: "
        "1 is not of type 'string', 'null'"]


def test_the_local_catalog_is_not_rendered_for_a_cluster():
    problems = render_problems(yaml.safe_load(DEFAULT_CATALOG.read_text()))
    assert problems[0] == \
        "platform.backend: 'local' is not allowed here: render makes manifests for a cluster; allowed: 'kubernetes'"
    # Its GitOps repository is the local Git server's, for which no Backstage pull-request action exists.
    assert [p.split(":")[0] for p in problems[1:]] == ["gitops.provider"]


def test_every_problem_names_the_catalog_key_the_value_and_what_is_allowed():
    data = copy.deepcopy(DATA)
    data["kubernetes"]["public_url"] = "jupyter.example.org/hub"
    data["kubernetes"]["images"]["spark"] = "registry.example.org/mlplatform/spark:latest"
    data["profiles"]["gpu-t4"]["image"] = "Registry/Notebook GPU"
    data["gpu_types"]["t4"]["node_selector"] = {}
    data["gpu_types"]["a100"]["resource"] = "nvidia gpu"
    data["gpu_types"]["a100"]["node_selector"] = {"nvidia.com/gpu.product": "NVIDIA A100"}
    assert render_problems(data) == [
        "kubernetes.public_url: 'jupyter.example.org/hub' is not allowed: use the hub's address without a path, "
        "e.g. 'https://jupyter.example.org'",
        "kubernetes.images.spark: 'registry.example.org/mlplatform/spark:latest' uses the tag 'latest'; pin a version "
        "(nodes pre-pull and cache one tag), e.g. 'registry.example.org/mlplatform/notebook:0.1.0'",
        "profiles.gpu-t4.image: 'Registry/Notebook GPU' is not an image reference with a tag; "
        "use e.g. 'registry.example.org/mlplatform/notebook:0.1.0'",
        "gpu_types.a100.resource: 'nvidia gpu' is not a Kubernetes resource name; e.g. 'nvidia.com/gpu'",
        "gpu_types.a100.node_selector.nvidia.com/gpu.product: 'NVIDIA A100' is not a label value: at most 63 "
        "letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        "gpu_types.t4.node_selector: empty is not allowed: render places the pre-pull DaemonSet of this GPU type's "
        "images by it; give the node label of these GPUs, e.g. {'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-80GB'}",
    ]


def test_each_team_needs_a_namespace_of_its_own():
    data = copy.deepcopy(DATA)
    data["teams"]["team-nlp"]["namespace"] = "team-vision"
    data["teams"]["team-audio"] = {"group": "team-audio", "namespace": "jupyterhub"}
    assert render_problems(data) == [
        "teams.team-nlp.namespace: 'team-vision' is not allowed: team team-vision has it already; each team gets a "
        "namespace (and quota) of its own",
        "teams.team-audio.namespace: 'jupyterhub' is not allowed: it is the hub's namespace "
        "(kubernetes.hub_namespace); give each team a namespace of its own",
    ]


def test_a_bad_catalog_writes_nothing_and_leaves_earlier_output_alone(tmp_path, capsys):
    data = copy.deepcopy(DATA)
    data["profiles"]["cpu"]["image"] = "notebook"
    bad = tmp_path / "platform.yaml"
    bad.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    (out / "teams").mkdir(parents=True)
    (out / "teams" / "team-vision.yaml").write_text("earlier output")

    assert main(["render", "--catalog", str(bad), "--out", str(out)]) == 1
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert stderr == (f"cannot render {bad}:\n  - profiles.cpu.image: 'notebook' is not an image reference with a tag; "
                      "use e.g. 'registry.example.org/mlplatform/notebook:0.1.0'\n")
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == ["teams", "teams/team-vision.yaml"]
    assert (out / "teams" / "team-vision.yaml").read_text() == "earlier output"


def test_an_invalid_catalog_file_is_reported_like_everywhere_else(tmp_path, capsys):
    data = copy.deepcopy(DATA)
    data["teams"]["team-nlp"]["quota"]["memory"] = "lots"
    bad = tmp_path / "platform.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["render", "--catalog", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        f"invalid catalog {bad}:\n  - teams.team-nlp.quota.memory: 'lots' is not allowed: 'lots' is not a memory "
        "quantity; use a number with K, M, G, T, Ki, Mi, Gi or Ti\n")
    assert not (tmp_path / "out").exists()


def test_render_checks_the_values_against_a_chart_when_given_one(tmp_path):
    chart = tmp_path / "jupyterhub"
    shutil.copytree(CHART, chart)
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["ingress"]["properties"]["enabled"] = {"const": False}  # a chart without ingress
    (chart / "values.schema.yaml").write_text(yaml.safe_dump(schema))
    catalog = load_catalog(EXAMPLE, environ={})
    assert render(catalog, charts={"jupyterhub": CHART})
    with pytest.raises(RenderError) as e:
        render(catalog, charts={"jupyterhub": chart})
    assert e.value.problems == ["helm-values/jupyterhub.yaml (chart jupyterhub): the chart's schema refuses "
                                "ingress.enabled: False was expected"]
