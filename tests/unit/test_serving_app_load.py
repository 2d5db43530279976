"""How a replica loads its model (mlplatform.serving.app.load), on a real MLflow model saved to a folder."""

from __future__ import annotations

import mlflow.pyfunc
import mlflow.sklearn
import mlflow.utils.requirements_utils
import pytest

from mlplatform.serving import app
from tests.support.mlflow_models import SAMPLE_ROWS, train


@pytest.fixture
def checks(monkeypatch):
    """Calls of MLflow's check of a model's pip requirements (a scan of every installed distribution)."""
    calls = []
    for module in (mlflow.pyfunc, mlflow.utils.requirements_utils):
        monkeypatch.setattr(module, "warn_dependency_requirement_mismatches", calls.append)
    return calls


def test_a_replica_loads_without_scanning_the_environment(tmp_path, checks):
    mlflow.sklearn.save_model(train(), tmp_path / "model")
    loaded = app.load({"model_uri": str(tmp_path / "model"), "model_version": "1"})
    assert checks == []  # seconds off every replica's start
    assert loaded.task == "predict" and loaded.version == "1"
    assert list(loaded.pyfunc.predict(__import__("pandas").DataFrame(SAMPLE_ROWS))) == [0, 1]


def test_a_model_that_fails_to_load_logs_how_its_requirements_differ(tmp_path, checks):
    mlflow.sklearn.save_model(train(), tmp_path / "model")
    (tmp_path / "model" / "model.skops").unlink(missing_ok=True)
    (tmp_path / "model" / "model.pkl").unlink(missing_ok=True)
    with pytest.raises(Exception):
        app.load({"model_uri": str(tmp_path / "model")})
    assert len(checks) == 1 and any(r.startswith("scikit-learn") for r in checks[0])
