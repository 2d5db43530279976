"""A replica's /predict with batching (mlplatform.serving.app.ModelServer.respond), on a real MLflow model
saved to a folder; concurrent calls share `@serve.batch` batches, as in a replica (no Ray cluster needed)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import mlflow.pyfunc
import mlflow.sklearn
import mlflow.utils.proto_json_utils
import pytest
from mlflow.models import infer_signature
from ray import serve
from sklearn.linear_model import LogisticRegression

from mlplatform.serving import app
from tests.support.mlflow_models import FEATURES, SAMPLE_ROWS, TRAINING, train

GOOD = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
# numbers as text: the cast accepts "0.9" for a double, refuses "a lot"; both bodies parse to the same layout
TEXT = json.dumps([{"x1": "0.9", "x2": 0.1}]).encode()
BAD = json.dumps([{"x1": "0.5", "x2": 1.0}, {"x1": "a lot", "x2": 1.0}]).encode()


@pytest.fixture(autouse=True)
def replica_context(monkeypatch):
    """Serve's batch queue reads the replica's max_ongoing_requests from its context (outside Serve: none)."""
    config = SimpleNamespace(max_ongoing_requests=app.ModelServer.max_ongoing_requests)
    monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(_deployment_config=config))


@pytest.fixture(autouse=True)
def fresh_batch_queue():
    """Serve keeps one batch queue per decorated method, on the event loop of its first call: each test
    (its own asyncio.run) starts without one."""
    queue = app.ModelServer.func_or_class.predict_batch.set_max_batch_size.__self__
    queue._queue = None
    yield
    queue._queue = None


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = train()
    path = tmp_path_factory.mktemp("batch") / "model"
    mlflow.sklearn.save_model(model, path, signature=infer_signature(TRAINING[FEATURES],
                                                                     model.predict(TRAINING[FEATURES])))
    return path


def replica(path, version="3"):
    """A replica's ModelServer."""
    server = app.ModelServer.func_or_class({"model_uri": str(path), "model_version": version})
    server.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.05})
    return server


@pytest.fixture
def server(model_path):
    return replica(model_path)


@pytest.fixture
def casts(monkeypatch):
    """Sizes of the frames given to MLflow's cast to the signature."""
    sizes = []
    cast = mlflow.utils.proto_json_utils.cast_df_types_according_to_schema

    def counted(frame, schema):
        sizes.append(len(frame))
        return cast(frame, schema)

    monkeypatch.setattr(mlflow.utils.proto_json_utils, "cast_df_types_according_to_schema", counted)
    return sizes


def answers(server, bodies):
    async def run():
        return await asyncio.gather(*(server.respond("POST", "/predict", body) for body in bodies))
    return asyncio.run(run())


def test_a_batch_is_cast_to_the_signature_once(server, casts):
    got = answers(server, [GOOD] * 6)
    assert [(a.status, a.doc) for a in got] == [(200, {"predictions": [0]})] * 6
    assert casts == [6]  # one cast of the six requests' rows together, not one per request


def test_one_bad_request_in_a_batch_gets_its_400_and_the_others_their_predictions(server, casts):
    got = answers(server, [GOOD, TEXT, BAD, GOOD])
    assert [a.status for a in got] == [200, 200, 400, 200]
    assert [a.doc for i, a in enumerate(got) if i != 2] == [{"predictions": [0]}, {"predictions": [1]},
                                                            {"predictions": [0]}]
    # the refusal names the bad request's own row, not its row in the batch
    assert got[2].doc == {"message": "column 'x1', row 1: \"a lot\" is not a double (the model's signature); "
                                     "allowed: a number"}
    assert got[2].headers["X-Model-Version"] == "3"
    # one batch: GOOD's two requests cast together, TEXT and BAD together (refused; then each alone)
    assert casts[:2] == [2, 3]


def test_a_number_the_cast_would_change_is_refused_in_a_batch_too(tmp_path):
    frame = TRAINING[FEATURES].assign(n=[1, 2, 3, 4, 5, 6, 7, 8])
    model = LogisticRegression().fit(frame, TRAINING["label"])
    mlflow.sklearn.save_model(model, tmp_path / "model", signature=infer_signature(frame, model.predict(frame)))
    whole = json.dumps([{"x1": 0.1, "x2": 1.0, "n": 2}]).encode()
    fraction = json.dumps([{"x1": 0.1, "x2": 1.0, "n": 2.5}]).encode()
    got = answers(replica(tmp_path / "model"), [whole, fraction, whole])
    assert [a.status for a in got] == [200, 400, 200]
    assert got[1].doc["message"].startswith("column 'n', row 0: 2.5 is not a long")


class Scaled(mlflow.pyfunc.PythonModel):
    """x1 × the `scale` inference parameter (default 1): a model whose signature has a params schema."""

    def predict(self, context, model_input, params=None):
        return (model_input["x1"] * (params or {}).get("scale", 1.0)).tolist()


def test_params_reach_the_model_and_a_batch_mixes_none_of_them(tmp_path):
    """`params` beside the data, as `mlflow models serve` takes them: requests with different params in one batch are
    scored apart; a value the params schema refuses is the client's 400, the others still answered."""
    frame = TRAINING[FEATURES]
    mlflow.pyfunc.save_model(tmp_path / "model", python_model=Scaled(), signature=infer_signature(
        frame, [0.0] * len(frame), params={"scale": 1.0}))
    rows = [{"x1": 0.5, "x2": 1.0}]
    bodies = [json.dumps({"dataframe_records": rows, **extra}).encode()
              for extra in ({}, {"params": {"scale": 2.0}}, {"params": {"scale": 3.0}}, {"params": {"scale": "big"}},
                            {"params": {"scale": 2.0}})]
    got = answers(replica(tmp_path / "model"), bodies)
    assert [(a.status, a.doc.get("predictions")) for a in got] == [
        (200, [0.5]), (200, [1.0]), (200, [1.5]), (400, None), (200, [1.0])]
    assert "scale" in got[3].doc["message"]
