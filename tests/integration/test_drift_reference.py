"""Reference data logged with a model and the drift report kept with it, against the platform's real MLflow:
`mlplatform.registry.log_reference_data` / `load_reference_data` and `mlplatform_service.drift.store_report`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlplatform import registry
from mlplatform.registry import facts
from mlplatform_service import drift

from ..support.mlflow_models import register_model, unique_name


def inputs(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(shift, 1, rows), "x2": rng.normal(0, 1, rows),
                         "kind": rng.choice(["a", "b", "c"], rows)})


@pytest.fixture(scope="module")
def client(platform):
    return MlflowClient(platform.mlflow_url)


@pytest.fixture(scope="module")
def version(platform):
    return register_model(platform.mlflow_url, unique_name("drift"))


def test_reference_data_logged_on_the_models_run_loads_back_from_the_model_uri(client, version):
    reference = inputs(300, seed=1)
    logged = registry.log_reference_data(reference, run_id=version.run_id, client=client)
    assert (logged.rows, logged.sampled, logged.path) == (300, False, "reference/training.parquet")

    pd.testing.assert_frame_equal(registry.load_reference_data(version.uri, client), reference)
    pd.testing.assert_frame_equal(registry.load_reference_data(f"runs:/{version.run_id}/model", client), reference)

    # An MLflow dataset input of the run, context "training", its source the Parquet file on the server:
    # the lineage the model card shows (next to the dataset the training itself logged).
    _, datasets = facts._run_facts(client, client.get_run(version.run_id))
    (ours,) = [d for d in datasets if d["name"] == "training"]
    assert ours["context"] == "training" and ours["digest"] == logged.digest
    assert ours["source_type"] == "http" and ours["source"].endswith(
        f"/{version.run_id}/artifacts/reference/training.parquet")


def test_a_large_frame_is_sampled_down_seeded_and_says_so(client):
    run = client.create_run(client.get_experiment_by_name("mlplatform-tests").experiment_id)
    big = inputs(500, seed=2).assign(row=range(500))
    with pytest.warns(UserWarning, match=r"500 rows sampled down to 100 \(seed 0\)"):
        logged = registry.log_reference_data(big, run_id=run.info.run_id, client=client, max_rows=100)
    assert (logged.rows, logged.rows_before_sampling, logged.sampled) == (100, 500, True)
    loaded = registry.load_reference_data(run.info.run_id, client)
    assert len(loaded) == 100 and loaded["row"].is_monotonic_increasing  # rows of the frame, in their order
    pd.testing.assert_frame_equal(loaded, big.iloc[loaded["row"]].reset_index(drop=True))


def test_a_version_without_reference_data_says_how_to_log_it(platform, client):
    bare = register_model(platform.mlflow_url, unique_name("drift-bare"), dataset=False)
    with pytest.raises(registry.NotFound, match=r"has no reference data under 'reference/' .*log_reference_data"):
        registry.load_reference_data(bare.uri, client)


def test_store_report_keeps_the_html_and_the_json_on_the_candidates_run(client, version):
    report = drift.compare(inputs(300, seed=1), inputs(300, seed=3, shift=1.0), subject=f"model {version.name} v1")
    assert report.status == "fail" and report.worst == "x1"

    assert drift.store_report(report, run_id=version.run_id, client=client) == {
        "html": "drift/report.html", "json": "drift/report.json"}
    names = sorted(f.path for f in client.list_artifacts(version.run_id, "drift"))
    assert names == ["drift/report.html", "drift/report.json"]
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(version.run_id, "drift", tmp))
        assert (local / "report.html").read_text() == report.html
        assert json.loads((local / "report.json").read_text()) == report.as_dict()

