"""Catalog loading and validation: every error names the file, the key path, the value and what is allowed."""

import copy

import pytest
import yaml

from mlplatform_core.catalog import CatalogError, load_catalog, parse_catalog
from mlplatform_core.quantities import parse_cpu, parse_memory
from hub_config.catalog import DEFAULT_CATALOG

BASE = yaml.safe_load(DEFAULT_CATALOG.read_text())


def problems_of(data, environ=None) -> list[str]:
    with pytest.raises(CatalogError) as e:
        parse_catalog(data, "platform.yaml", environ if environ is not None else {})
    assert str(e.value).startswith("invalid catalog platform.yaml:")
    return e.value.problems


def edited(**changes):
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return data


def test_default_catalog_loads_with_env_defaults():
    catalog = load_catalog(DEFAULT_CATALOG, environ={})
    assert catalog.path == str(DEFAULT_CATALOG)
    assert catalog.sso.realm_url == "http://127.0.0.1:18080/realms/platform"
    assert catalog.mlflow.tracking_uri == "http://127.0.0.1:18500"
    assert list(catalog.teams) == ["team-vision", "team-nlp"]
    assert catalog.teams["team-vision"].gpu_quota.per_type == {"a100": 4, "t4": 2}
    assert catalog.profiles["gpu-a100"].gpu.counts == [1, 2, 4]
    assert catalog.gpu_types["t4"].local_devices == ["6", "7"]


def test_environment_references_are_expanded():
    catalog = load_catalog(DEFAULT_CATALOG, environ={"MLPLATFORM_SSO_PORT": "9999", "MLPLATFORM_MLFLOW_PORT": "7777"})
    assert catalog.sso.realm_url == "http://127.0.0.1:9999/realms/platform"
    assert catalog.mlflow.tracking_uri == "http://127.0.0.1:7777"


def test_undefined_variable_without_default_is_an_error():
    data = edited(mlflow={"tracking_uri": "http://${MLFLOW_HOST}:5000"})
    assert problems_of(data) == [
        "mlflow.tracking_uri: ${MLFLOW_HOST} refers to $MLFLOW_HOST, which is not set; "
        "set it or give a default as ${MLFLOW_HOST:-value}"
    ]


def test_unknown_key_lists_allowed_keys():
    data = copy.deepcopy(BASE)
    data["profiles"]["cpu"]["gpus"] = 2
    assert problems_of(data) == [
        "profiles.cpu.gpus: unknown key 'gpus'; allowed keys: display_name, description, image, cpu, memory, "
        "teams, gpu, default, idle_timeout_seconds"
    ]


def test_profile_referring_to_unknown_team_and_gpu_type():
    data = copy.deepcopy(BASE)
    data["profiles"]["gpu-a100"]["teams"] = ["team-vision", "team-robots"]
    data["profiles"]["gpu-a100"]["gpu"]["types"] = ["h100"]
    assert problems_of(data) == [
        "profiles.gpu-a100.teams[1]: 'team-robots' is not a team; allowed: team-vision, team-nlp",
        "profiles.gpu-a100.gpu.types[0]: 'h100' is not a GPU type; allowed: a100, t4",
    ]


def test_quota_per_type_beyond_total_and_unknown_type():
    data = copy.deepcopy(BASE)
    data["teams"]["team-nlp"]["gpu_quota"] = {"total": 2, "per_type": {"a100": 3, "v100": 1}}
    assert problems_of(data) == [
        "teams.team-nlp.gpu_quota.per_type.a100: 3 is more than the team's total GPU quota 2; allowed: 0 to 2",
        "teams.team-nlp.gpu_quota.per_type: 'v100' is not a GPU type; allowed: a100, t4",
    ]


def test_bad_values_name_key_value_and_rule():
    data = copy.deepcopy(BASE)
    data["teams"]["team-nlp"]["namespace"] = "Team_NLP"
    data["profiles"]["cpu"]["memory"]["limit"] = "4 gigs"
    data["profiles"]["gpu-t4"]["gpu"]["counts"] = [0, 1]
    data["platform"]["backend"] = "slurm"
    problems = problems_of(data)
    assert "platform.backend: 'slurm' is not allowed: Input should be 'local' or 'kubernetes'" in problems
    assert ("teams.team-nlp.namespace: 'Team_NLP' is not allowed: must be a DNS label: lowercase letters, digits "
            "and '-', at most 63 characters") in problems
    assert ("profiles.cpu.memory.limit: '4 gigs' is not allowed: '4 gigs' is not a memory quantity; use a number "
            "with K, M, G, T, Ki, Mi, Gi or Ti") in problems
    assert "profiles.gpu-t4.gpu.counts[0]: 0 is not allowed: Input should be greater than 0" in problems
    assert len(problems) == 4


def test_missing_section_and_duplicate_group():
    data = copy.deepcopy(BASE)
    del data["mlflow"]
    data["teams"]["team-nlp"]["group"] = "team-vision"
    assert problems_of(data) == ["mlflow: required key is missing"]
    del data["teams"]["team-nlp"]["gpu_quota"]
    data["mlflow"] = BASE["mlflow"]
    assert problems_of(data) == [
        "teams: group 'team-vision' is used by more than one team; each Keycloak group maps to one team"
    ]


def test_unreadable_and_invalid_yaml_files(tmp_path):
    with pytest.raises(CatalogError, match=r"missing.yaml:\n  - cannot read the file: No such file"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teams: [unclosed\n")
    with pytest.raises(CatalogError, match="bad.yaml:\n  - not valid YAML"):
        load_catalog(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(CatalogError, match="the catalog must be a mapping of sections, not list"):
        load_catalog(bad)


def test_catalog_is_immutable():
    catalog = load_catalog(DEFAULT_CATALOG, environ={})
    with pytest.raises(Exception):
        catalog.profiles["cpu"].image = "other"


@pytest.mark.parametrize(("text", "value"), [("4Gi", 4 * 2**30), ("512M", 512 * 10**6), (1024, 1024), ("1.5G", 1.5e9)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize(("text", "value"), [("500m", 0.5), (2, 2.0), ("0.25", 0.25)])
def test_parse_cpu(text, value):
    assert parse_cpu(text) == value


def test_parse_cpu_rejects_zero_and_words():
    with pytest.raises(ValueError, match="must be more than 0 cores"):
        parse_cpu(0)
    with pytest.raises(ValueError, match="'two' is not a CPU quantity"):
        parse_cpu("two")


def test_kubernetes_section_defaults_and_team_cpu_memory_quota():
    catalog = load_catalog(DEFAULT_CATALOG, environ={})
    assert catalog.kubernetes.model_dump() == {
        "hub_namespace": "jupyterhub", "cluster_domain": "cluster.local", "public_url": "https://jupyter.example.org",
        "service_account": "mlplatform-notebook", "spark_service_account": "mlplatform-spark",
        "serving_service_account": "mlplatform-serving",
        "service_account_issuer": None, "service_account_jwks_url": None,  # RayService pods' tokens for MLflow
        "pod_cidrs": [],  # unknown: the admission webhook port stays open to every address
        "images": {"hub": "mlplatform/hub:0.1.0", "serving": "mlplatform/ray:0.1.0",
                   "serving_gpu": "mlplatform/ray-gpu:0.1.0", "spark": "mlplatform/spark:0.1.0", "external": []},
        # Each team's rollout gateway (hub_config/render/gateway.py); its service account gets no cloud identity
        # until the catalog gives one (the evidence cannot be written without).
        "gateway": {"replicas": 2, "service_account_annotations": {}}}
    assert catalog.teams["team-nlp"].quota.model_dump() == {"cpu": None, "memory": None}  # no quota: none rendered
    data = copy.deepcopy(BASE)
    data["teams"]["team-nlp"]["quota"] = {"cpu": "500m", "memory": "64Gi"}
    assert parse_catalog(data, environ={}).teams["team-nlp"].quota.model_dump() == {"cpu": "500m", "memory": "64Gi"}


def test_the_service_account_issuer_comes_with_its_keys():
    data = copy.deepcopy(BASE)
    data["kubernetes"] = {"service_account_issuer": "https://oidc.example.org/id/x"}
    with pytest.raises(CatalogError) as e:
        parse_catalog(data, environ={})
    assert ("kubernetes.service_account_issuer and kubernetes.service_account_jwks_url: set both (the issuer MLflow "
            "trusts and where its keys are) or neither") in str(e.value)


def test_team_quota_and_kubernetes_settings_are_checked():
    data = copy.deepcopy(BASE)
    data["teams"]["team-nlp"]["quota"] = {"cpu": "lots", "memory": "64 gigs", "gpus": 2}
    data["kubernetes"] = {"spark_service_account": "Spark_Driver"}
    assert problems_of(data) == [
        "kubernetes.spark_service_account: 'Spark_Driver' is not allowed: must be a DNS label: lowercase letters, "
        "digits and '-', at most 63 characters",
        "teams.team-nlp.quota.cpu: 'lots' is not allowed: 'lots' is not a CPU quantity; use cores (0.5, 2) or "
        "millicores ('500m')",
        "teams.team-nlp.quota.memory: '64 gigs' is not allowed: '64 gigs' is not a memory quantity; use a number with "
        "K, M, G, T, Ki, Mi, Gi or Ti",
        "teams.team-nlp.quota.gpus: unknown key 'gpus'; allowed keys: cpu, memory",
    ]
