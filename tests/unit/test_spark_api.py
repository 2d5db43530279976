"""The Python API picks the backend from MLPLATFORM_BACKEND and validates input before anything starts."""

import pytest

from mlplatform import spark
from mlplatform.spark import LocalSparkBackend, SparkBackendError, SparkJobError


def test_local_backend_by_default_and_by_name():
    assert isinstance(spark.backend({}), LocalSparkBackend)
    local = spark.backend({"MLPLATFORM_BACKEND": "local", "MLPLATFORM_USER": "alice"})
    assert isinstance(local, LocalSparkBackend) and local.user == "alice"


def test_kubernetes_backend_needs_the_environment_contract():
    with pytest.raises(SparkBackendError) as info:
        spark.backend({"MLPLATFORM_BACKEND": "kubernetes"})
    assert str(info.value) == (
        "MLPLATFORM_NAMESPACE, MLPLATFORM_TEAM, MLPLATFORM_USER, MLPLATFORM_S3_BUCKET, MLPLATFORM_S3_TEAM_PREFIX "
        "not set: Spark jobs on Kubernetes need the team's namespace and S3 prefix from the environment contract "
        "(a server started by the platform's hub)")


def test_unknown_backend():
    with pytest.raises(SparkBackendError, match=r"^MLPLATFORM_BACKEND is 'yarn'; allowed: 'local', 'kubernetes'$"):
        spark.backend({"MLPLATFORM_BACKEND": "yarn"})


def test_bad_input_is_refused_before_the_backend_is_chosen(monkeypatch):
    monkeypatch.setenv("MLPLATFORM_BACKEND", "kubernetes")
    with pytest.raises(SparkJobError, match=r"^executors: -1 is too small"):
        spark.submit("wordcount", "wordcount.py", executors=-1)
    with pytest.raises(SparkBackendError, match="MLPLATFORM_NAMESPACE"):
        spark.status("wordcount-00000000")


def test_missing_main_file_through_the_api_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MLPLATFORM_BACKEND", "local")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SparkJobError, match=r"^main_file: 'wordcount.py' does not exist"):
        spark.submit("wordcount", "wordcount.py")
    assert not (tmp_path / ".mlplatform").exists()
    assert spark.applications() == []
