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


def test_a_spare_waits_without_a_model_and_takes_one_over_in_reconfigure(tmp_path, monkeypatch):
    """The warm spare (local.py): built with `{"spare": true}` it imports the loaders and answers 503; the
    user_config that takes it over sets the environment, reads the secrets file and loads the model in place."""
    import asyncio
    import json
    import os
    import sys

    mlflow.sklearn.save_model(train(), tmp_path / "model")
    secrets = tmp_path / "iris.secrets"
    secrets.write_text(json.dumps({"MLPLATFORM_TEST_SECRET": "s3cret"}))
    for name in ("MLPLATFORM_TEST_SECRET", "MLPLATFORM_TEST_VARIABLE", app.SECRETS_FILE_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    server = app.ModelServer.func_or_class(None)
    assert server.model is None and "skops.io" in sys.modules
    answer = asyncio.run(server.respond("GET", "/health", b""))
    assert answer.status == 503 and "no model yet" in answer.doc["message"]
    server.reconfigure({"max_batch_size": 8, "model": {"model_uri": str(tmp_path / "model"), "model_version": "3",
                                                       "requested_uri": "models:/iris@champion", "task": None},
                        "env": {"MLPLATFORM_TEST_VARIABLE": "x", app.SECRETS_FILE_VARIABLE: str(secrets)}})
    assert os.environ["MLPLATFORM_TEST_VARIABLE"] == "x" and os.environ["MLPLATFORM_TEST_SECRET"] == "s3cret"
    answer = asyncio.run(server.respond("GET", "/health", b""))
    assert answer.status == 200 and answer.doc["model_version"] == "3" and answer.headers == {"X-Model-Version": "3"}
    loaded = server.model
    server.reconfigure({"max_batch_size": 16, "model": {"model_uri": str(tmp_path / "model"), "model_version": "3"}})
    assert server.model is loaded  # batching changes in place; the model is not loaded again
    with pytest.raises(RuntimeError, match="needs a new one"):  # one model per process: Serve starts a new replica
        server.reconfigure({"model": {"model_uri": "models:/other/1"}})
    assert server.model is loaded
    assert app.build({"spare": True})._bound_deployment.init_args == (None,)
