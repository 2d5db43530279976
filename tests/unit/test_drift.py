"""The drift gate's comparison (mlplatform_service.drift): a live window drawn from a shifted distribution
fails the gate, an unshifted one of the same size passes, too little data is neither, and bad input is
a ValueError naming what is wrong. Seeded numpy samples; no MLflow (store_report gets a recording client)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlplatform_service import drift

FEATURES = ["x1", "x2", "x3"]
REFERENCE_ROWS, LIVE_ROWS = 5000, 1000


def frame(rows: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    """Three numeric features (normal, lognormal, uniform integers) and a categorical one; `shift` adds
    that many standard deviations to a feature's mean."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    return pd.DataFrame({
        "x1": rng.normal(10 + 2 * shift.get("x1", 0), 2, rows),
        "x2": rng.lognormal(0, 0.5, rows) + shift.get("x2", 0) * np.sqrt((np.exp(0.25) - 1) * np.exp(0.25)),
        "x3": rng.integers(0, 5, rows) + shift.get("x3", 0) * np.sqrt(2),
        "colour": rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]),
    })


@pytest.fixture(scope="module")
def reference():
    return frame(REFERENCE_ROWS, seed=1)


def test_a_shifted_live_window_fails_the_gate_and_an_unshifted_one_of_the_same_size_passes(reference):
    unshifted = drift.compare(reference, frame(LIVE_ROWS, seed=2))
    shifted = drift.compare(reference, frame(LIVE_ROWS, seed=2, shift={"x2": 1.0}))

    assert (unshifted.status, unshifted.drifted, unshifted.passed) == ("pass", False, True)
    assert unshifted.score <= 0.2
    assert not any(f.drifted for f in unshifted.per_feature.values())

    assert (shifted.status, shifted.drifted, shifted.passed) == ("fail", True, False)
    assert shifted.score > 0.2
    # The per-feature scores name the shifted feature, and only it.
    assert shifted.worst == "x2" and shifted.score == shifted.per_feature["x2"].score
    assert [name for name, f in shifted.per_feature.items() if f.drifted] == ["x2"]
    assert shifted.reason.startswith("1 of 4 features drifted; the largest PSI is ")
    assert "('x2'), above the threshold 0.2" in shifted.reason
    assert shifted.rows == unshifted.rows == {"reference": REFERENCE_ROWS, "live": LIVE_ROWS}


@pytest.mark.parametrize("feature", ["x1", "x3"])
def test_a_one_sd_shift_of_any_numeric_feature_is_caught_and_named(reference, feature):
    report = drift.compare(reference, frame(LIVE_ROWS, seed=3, shift={feature: 1.0}))
    assert report.status == "fail" and report.worst == feature
    assert report.per_feature[feature].method == "psi" and report.per_feature[feature].kind == "numeric"


def test_numeric_features_are_binned_by_the_references_deciles(reference):
    report = drift.compare(reference, frame(LIVE_ROWS, seed=2))
    x1 = report.per_feature["x1"]
    assert len(x1.bins) == 10 and x1.bins[0].startswith("< ") and x1.bins[-1].startswith("≥ ")
    assert all(abs(p - 0.1) < 0.001 for p in x1.reference)  # a tenth of the reference in each bin
    assert sum(x1.live) == pytest.approx(1, abs=1e-4)
    assert x1.test == "ks" and 0 <= x1.p_value <= 1
    # Few distinct values: tied deciles merge (5 integers, 5 populated bins and the empty one below).
    assert len(report.per_feature["x3"].bins) <= 6


def test_the_threshold_is_the_gates(reference):
    live = frame(LIVE_ROWS, seed=2, shift={"x2": 0.3})
    score = drift.compare(reference, live).score
    assert drift.compare(reference, live, threshold=score).status == "pass"  # at the threshold passes
    assert drift.compare(reference, live, threshold=score / 2).status == "fail"


def test_categorical_features_compare_their_categories_and_a_new_one_counts_as_other(reference):
    live = frame(LIVE_ROWS, seed=2)
    live.loc[: LIVE_ROWS // 2, "colour"] = "purple"
    report = drift.compare(reference, live)
    colour = report.per_feature["colour"]
    assert (colour.kind, colour.method, colour.test) == ("categorical", "psi", "chi2")
    assert colour.bins == ["red", "green", "blue", "(other)"] and colour.unseen == ["purple"]
    assert colour.reference[-1] == 0 and colour.live[-1] > 0.5
    assert report.status == "fail" and report.worst == "colour"


def test_booleans_and_pandas_categories_are_categorical():
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"flag": rng.random(500) < 0.3,
                              "size": pd.Categorical(rng.choice(["S", "M", "L"], 500))})
    live = pd.DataFrame({"flag": rng.random(500) < 0.7, "size": pd.Categorical(rng.choice(["S", "M", "L"], 500))})
    report = drift.compare(reference, live)
    assert {n: f.kind for n, f in report.per_feature.items()} == {"flag": "categorical", "size": "categorical"}
    assert report.worst == "flag" and report.per_feature["flag"].drifted
    assert not report.per_feature["size"].drifted


def test_missing_values_are_a_bin_of_their_own(reference):
    live = frame(LIVE_ROWS, seed=2)
    live.loc[: LIVE_ROWS // 2, "x1"] = np.nan
    x1 = drift.compare(reference, live).per_feature["x1"]
    assert x1.bins[-1] == "(missing)" and x1.reference[-1] == 0 and x1.live[-1] == pytest.approx(0.501)
    assert x1.drifted


def test_too_few_rows_is_insufficient_data_neither_pass_nor_fail(reference):
    report = drift.compare(reference, frame(199, seed=2, shift={"x2": 3.0}), min_rows=200)
    assert (report.status, report.score, report.drifted, report.passed) == ("insufficient", None, None, False)
    assert report.per_feature == {} and report.worst is None
    assert report.reason == "insufficient data: the live data has 199 rows, fewer than min_rows=200"
    assert "INSUFFICIENT" in report.html and report.reason in report.html
    assert report.as_dict()["status"] == "insufficient"
    # The reference counts too; and at min_rows the gate decides.
    small = drift.compare(reference.head(50), frame(LIVE_ROWS, seed=2), min_rows=100)
    assert small.status == "insufficient" and "the reference data has 50 rows" in small.reason
    assert drift.compare(reference, frame(200, seed=2, shift={"x2": 3.0}), min_rows=200).status == "fail"


def test_a_feature_missing_from_the_live_data_is_a_value_error_naming_it(reference):
    live = frame(LIVE_ROWS, seed=2).drop(columns=["x3"])
    with pytest.raises(ValueError, match=r"^the live data has no column 'x3'; its columns: 'x1', 'x2', 'colour'$"):
        drift.compare(reference, live)
    with pytest.raises(ValueError, match=r"^the reference data has no column 'x9'"):
        drift.compare(reference, frame(LIVE_ROWS, seed=2), features=["x1", "x9"])
    # Columns of the live data that are not features are left alone.
    assert drift.compare(reference, frame(LIVE_ROWS, seed=2).assign(extra=1), features=["x1"]).features == ["x1"]


def test_unsupported_or_mismatched_features_are_refused_clearly(reference):
    dates = reference.assign(when=pd.Timestamp("2026-01-01"))
    with pytest.raises(ValueError, match=r"feature 'when' has dtype datetime64\[.*\] in the reference data .*numeric "
                                         r"\(int, float\), boolean and categorical \(str, category\).*features="):
        drift.compare(dates, dates)
    live = frame(LIVE_ROWS, seed=2).assign(x1=lambda d: d["x1"].map(str))
    with pytest.raises(ValueError, match=r"feature 'x1' is numeric \(float64\) in the reference data but categorical"):
        drift.compare(reference, live)
    ids = reference.assign(user=[f"user-{i}" for i in range(REFERENCE_ROWS)])
    with pytest.raises(ValueError, match=r"feature 'user' has 5000 distinct values in the reference data, more than"):
        drift.compare(ids, ids)
    with pytest.raises(ValueError, match=r"threshold -1 is not allowed: give a number above 0"):
        drift.compare(reference, reference, threshold=-1)
    with pytest.raises(ValueError, match=r"min_rows 0 is not allowed"):
        drift.compare(reference, reference, min_rows=0)
    with pytest.raises(ValueError, match=r"the live data is a list: give a pandas DataFrame"):
        drift.compare(reference, [1, 2])


def test_the_html_report_is_produced_and_the_report_is_deterministic_and_json_ready(reference):
    live = frame(LIVE_ROWS, seed=2, shift={"x2": 1.0})
    report = drift.compare(reference, live, subject="model iris v3")
    again = drift.compare(reference.copy(), live.copy(), subject="model iris v3")
    assert report.html == again.html and report.as_dict() == again.as_dict()
    html = report.html
    assert html.startswith("<!DOCTYPE html>") and len(html) > 2000
    assert "Feature drift of model iris v3" in html and "<svg" in html and "FAIL" in html
    assert all(f'id="f-{name}"' in html for name in [*FEATURES, "colour"])
    summary = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    assert summary["status"] == "fail" and summary["worst"] == "x2" and summary["method"] == "psi"
    assert set(summary["per_feature"]) == {*FEATURES, "colour"}
    assert summary["per_feature"]["x2"]["drifted"] is True and summary["per_feature"]["x2"]["score"] > 0.2


def test_user_chosen_names_are_escaped_in_the_html():
    rng = np.random.default_rng(5)
    name = "<script>alert(1)</script>"
    reference = pd.DataFrame({name: rng.normal(size=300)})
    html = drift.compare(reference, pd.DataFrame({name: rng.normal(size=300)}), subject="<b>x</b>").html
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>x</b>" not in html


class RecordingClient:
    def __init__(self):
        self.logged = {}

    def log_text(self, run_id, text, artifact_file):
        self.logged[(run_id, artifact_file)] = text


def test_store_report_logs_the_html_and_the_json_summary_on_the_run(reference):
    report = drift.compare(reference, frame(LIVE_ROWS, seed=2))
    client = RecordingClient()
    assert drift.store_report(report, run_id="r1", client=client) == {"html": "drift/report.html",
                                                                      "json": "drift/report.json"}
    assert client.logged[("r1", "drift/report.html")] == report.html
    assert json.loads(client.logged[("r1", "drift/report.json")]) == report.as_dict()
    drift.store_report(report, run_id="r1", client=client, artifact_file="drift/2026-12-02/report.html")
    assert ("r1", "drift/2026-12-02/report.json") in client.logged
    with pytest.raises(ValueError, match="artifact_file '../x.html' is not allowed"):
        drift.store_report(report, run_id="r1", client=client, artifact_file="../x.html")
    with pytest.raises(ValueError, match="run_id '' is not allowed"):
        drift.store_report(report, run_id="", client=client)
