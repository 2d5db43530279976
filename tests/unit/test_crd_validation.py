"""The strict CRD validator used by the spec-builder tests rejects what the API server would."""

import jsonschema
import pytest

from ..support.crd import SCHEMAS, errors, validate

MINIMAL_SPARK_APP = {
    "apiVersion": "sparkoperator.k8s.io/v1beta2",
    "kind": "SparkApplication",
    "metadata": {"name": "wordcount", "namespace": "team-vision"},
    "spec": {"type": "Python", "mode": "cluster", "sparkVersion": "4.0.0",
             "mainApplicationFile": "s3a://platform/teams/team-vision/wordcount.py",
             "driver": {"cores": 1, "memory": "1g"}, "executor": {"instances": 1, "cores": 1, "memory": "1g"}},
}


def test_schemas_are_the_shared_upstream_copies():
    assert (SCHEMAS / "README.md").exists()


def test_valid_resource_passes():
    validate(MINIMAL_SPARK_APP)


def test_unknown_field_is_rejected_in_strict_mode():
    bad = {**MINIMAL_SPARK_APP, "spec": {**MINIMAL_SPARK_APP["spec"], "executors": 2}}
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    assert any("'executors' was unexpected" in e for e in errors(bad))


def test_wrong_type_is_rejected():
    bad = {**MINIMAL_SPARK_APP, "spec": {**MINIMAL_SPARK_APP["spec"], "type": "Rust"}}
    assert errors(bad) == ["spec.type: 'Rust' is not one of ['Java', 'Python', 'Scala', 'R']"]
