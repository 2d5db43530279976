"""The live gates of safe rollout (mlplatform_service.live_gates) on synthetic inference-log windows, and their
catalog keys (promotion.live_gates, teams.<team>.live_gates, serving.inference_log)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from mlplatform.serving import inference_log
from mlplatform.serving.inference_log import COLUMNS, schema
from mlplatform_core.catalog import (
    CatalogError,
    InferenceLogSettings,
    LiveGates,
    TeamLiveGates,
    load_catalog,
    parse_catalog,
)
from mlplatform_service import drift
from mlplatform_service.live_gates import agreement, breach, evaluate, side_stats

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.render.common import catalog_document

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
GATES = LiveGates()
COLOURS = ["red", "green", "blue"]


def answer(i: int, side: str, **fields) -> dict:
    """One logged answer of request i (i seconds after T0)."""
    row = {"request_id": f"req-{i:05d}", "endpoint": "iris", "side": side, "mode": "shadow",
           "model_version": "3" if side == "champion" else "4", "time": T0 + timedelta(seconds=i),
           "latency_ms": 15.0, "status": 200, "error": None, "inputs": json.dumps([{"x1": 0.0}]), "outputs": "[0]",
           "key": None}
    return {**row, **fields}


def frame(rows: list[dict]) -> pd.DataFrame:
    """What read_window gives for these rows."""
    assert tuple(schema().names) == COLUMNS
    return pa.Table.from_pylist(rows, schema=schema()).to_pandas()


def features(rng, n: int, shift: float = 0.0) -> list[dict]:
    return [{"x1": float(rng.normal(shift, 1)), "x2": float(rng.normal(5, 2)), "colour": str(rng.choice(COLOURS))}
            for _ in range(n)]


def reference(seed: int = 7, n: int = 2000) -> pd.DataFrame:
    return pd.DataFrame(features(np.random.default_rng(seed), n))


def shadow(n: int, *, seed: int = 1, shift: float = 0.0, wide_every: int | None = None, wide_ms: float = 800.0,
           candidate: dict | None = None) -> list[dict]:
    """n mirrored requests, both sides with latencies of one distribution (about 15 ms, p99 about 30 ms). Every
    `wide_every`-th request is a rare input shape (40 rows) that the candidate takes `wide_ms` for."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        wide = wide_every is not None and i % wide_every == wide_every // 2
        body = json.dumps(features(rng, 40 if wide else 1, shift))
        outputs = json.dumps([[0.2, 0.8]])
        rows.append(answer(i, "champion", latency_ms=float(rng.lognormal(np.log(15), 0.3)), inputs=body,
                           outputs=outputs))
        latency = wide_ms if wide else float(rng.lognormal(np.log(15), 0.3))
        rows.append(answer(i, "candidate", **{"latency_ms": latency, "inputs": body, "outputs": outputs,
                                              **(candidate or {})}))
    return rows


def now_after(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


# --- side_stats ---------------------------------------------------------------------------------------------

def test_side_stats_counts_server_errors_not_client_errors_and_the_rate_over_the_window():
    rows = [answer(i, "candidate", latency_ms=float(i + 1), status=503 if i < 3 else 422 if i < 8 else 200)
            for i in range(100)]
    stats = side_stats(frame(rows), "candidate", now=now_after(100), window_seconds=200)
    assert (stats.side, stats.model_version, stats.requests, stats.errors, stats.client_errors) == \
        ("candidate", "4", 100, 3, 5)
    assert stats.error_rate == 0.03
    assert stats.p50_ms == pytest.approx(50.5) and stats.p99_ms == pytest.approx(99.01)
    assert stats.rate_per_s == 1.0  # from the first record (the window reaches further back than the rollout)
    assert stats.slower_than(90) == 10
    assert side_stats(frame(rows), "candidate", now=now_after(100), window_seconds=50).requests == 50
    assert side_stats(frame(rows), "candidate", now=now_after(200), window_seconds=50).rate_per_s is None


def test_side_stats_of_no_answers_and_bad_arguments():
    stats = side_stats(frame([]), "champion")
    assert (stats.requests, stats.errors, stats.error_rate, stats.p99_ms, stats.rate_per_s, stats.model_version) == \
        (0, 0, None, None, None, None)
    with pytest.raises(ValueError, match="side 'shadow' is not allowed: give one of champion, candidate"):
        side_stats(frame([]), "shadow")
    with pytest.raises(ValueError, match="the window has no column 'latency_ms', 'status'"):
        side_stats(frame([]).drop(columns=["latency_ms", "status"]), "champion")


def test_only_the_current_candidate_version_counts():
    """v4 failed and was replaced by v5 within the window: v5 is judged on its own answers."""
    rows = [answer(i, "candidate", model_version="4", status=500) for i in range(30)]
    rows += [answer(i, "candidate", model_version="5") for i in range(30, 60)]
    rows += [answer(i, "champion") for i in range(60)]
    df = frame(rows)
    stats = side_stats(df, "candidate")
    assert (stats.model_version, stats.requests, stats.errors, stats.other_versions) == ("5", 30, 0, 30)
    assert side_stats(df, "candidate", version="4").errors == 30
    assert breach(df, GATES) is None
    assert evaluate(df, GATES, reference=None, candidate_version="4").breach.startswith("candidate error rate 100%")


# --- breach: the rollback -----------------------------------------------------------------------------------

def test_a_slow_candidate_on_a_rare_input_shape_breaches_the_p99_ratio():
    df = frame(shadow(57, wide_every=19))  # 3 of 57 requests have 40 rows: the candidate takes 800 ms for them
    report = evaluate(df, GATES, reference=None, now=now_after(57))
    champion, candidate = report.champion, report.candidate
    assert candidate.requests == 57 and candidate.p99_ms == 800.0 and champion.p99_ms < 40
    ratio = 800.0 / champion.p99_ms
    expected = (f"candidate p99 800 ms is {ratio:.1f}× the champion's {champion.p99_ms:.1f} ms (allowed: 1.5×) "
                "over 57 requests")
    assert breach(df, GATES) == expected == report.breach
    assert breach(report, GATES) == expected
    assert candidate.p50_ms < 20  # the typical request is as fast as the champion's


def test_server_errors_breach_and_client_errors_do_not():
    rows = shadow(50)
    for i, row in enumerate(r for r in rows if r["side"] == "candidate"):
        if i % 10 == 0:
            row.update(status=503, error="the model failed: RuntimeError: CUDA out of memory", outputs=None)
        elif i % 10 == 1:
            row.update(status=422, error="the body has no column 'x2'", outputs=None)
    assert breach(frame(rows), GATES) == ("candidate error rate 10% (5 of 50 answers with HTTP status ≥ 500) is "
                                          "above the allowed 1%")
    for row in rows:
        if row["status"] == 503:
            row.update(status=400)
    assert breach(frame(rows), GATES) is None  # 10 client errors in 50: the callers' mistakes


def test_too_few_answers_never_roll_back_and_are_not_promotable():
    rows = shadow(19, candidate={"status": 500, "latency_ms": 5000.0, "outputs": None})  # every answer bad
    df = frame(rows)
    assert breach(df, GATES) is None  # 19 < min_requests_for_rollback
    report = evaluate(df, GATES, reference=reference(), now=now_after(19))
    assert not report.promotable and report.breach is None
    gate = report.gate("min_requests")
    assert (gate.passed, gate.value, gate.limit) == (None, 19, 200)
    assert gate.message == ("waiting for data: the candidate answered 19 requests in the window; 200 are needed "
                            "before a promotion (181 more)")
    assert report.gate("error_rate").passed is None
    assert report.gate("error_rate").message.startswith("waiting for data (19 of the 200 candidate answers needed): "
                                                        "so far 100% of the candidate's answers were server errors")
    assert report.gate("drift").passed is None
    rows = shadow(20, candidate={"status": 500, "latency_ms": 5000.0, "outputs": None})
    assert breach(frame(rows), GATES).startswith("candidate error rate 100% (20 of 20 answers")


def test_a_fresh_replicas_warm_up_does_not_roll_back_nor_one_slow_answer_after_it_two_do():
    rows = shadow(60)
    candidates = [r for r in rows if r["side"] == "candidate"]
    for i, latency in enumerate([67.3, 81.7, 83.5, 91.1, 99.8, 106.8, 83.2, 86.6]):  # measured (live_gates.py)
        candidates[i]["latency_ms"] = latency * 10  # a replica loading its model: its first answers are slow
    assert side_stats(frame(rows), "candidate").p99_ms > 800
    warm = side_stats(frame(rows), "candidate", warmup=GATES.warmup_requests)
    assert (warm.requests, warm.warmup, warm.p99_ms < 40) == (60, 20, True)
    assert breach(frame(rows), GATES) is None
    without_warmup = breach(frame(rows), LiveGates(warmup_requests=0))
    assert without_warmup.startswith("candidate p99 1") and without_warmup.endswith("(allowed: 1.5×) over 60 requests")
    candidates[30]["latency_ms"] = 2500.0  # one slow answer past the warm-up: a pause of the collector
    assert breach(frame(rows), GATES) is None
    candidates[40]["latency_ms"] = 2500.0
    assert breach(frame(rows), GATES).startswith("candidate p99 2500 ms is ")


def test_the_warm_up_counts_errors_and_a_side_with_only_warm_up_answers_waits():
    rows = shadow(30, candidate={"status": 503, "latency_ms": 5.0, "outputs": None})
    assert breach(frame(rows), GATES).startswith("candidate error rate 100% (30 of 30 answers")
    report = evaluate(frame(shadow(15)), LiveGates(min_requests=20, latency_slo_ms=100), reference=None)
    assert report.candidate.p99_ms is None and report.candidate.as_dict()["warmup"] == 15
    assert report.gate("p99_ratio").message == report.gate("latency_slo").message == (
        "waiting for data: the candidate's 15 answers in the window are all its warm-up (its first 15, left out of "
        "its latencies)")


def test_the_latency_slo_and_a_champion_with_too_few_answers_for_a_ratio():
    """Canary: the champion answered 10 requests, the candidate 90 at 120 ms; only the absolute SLO applies."""
    rows = [answer(i, "champion", mode="canary", latency_ms=10.0) for i in range(10)]
    rows += [answer(i, "candidate", mode="canary", latency_ms=120.0) for i in range(10, 100)]
    df = frame(rows)
    assert breach(df, GATES) is None
    gates = LiveGates(latency_slo_ms=100, min_requests=90, warmup_requests=0)  # every answer timed
    assert breach(df, gates) == "candidate p99 120 ms is above the latency SLO of 100 ms over 90 requests"
    report = evaluate(df, gates, reference=None)
    assert report.mode == "canary" and report.agreement is None
    slo = report.gate("latency_slo")
    assert (slo.passed, slo.value, slo.limit) == (False, 120.0, 100)
    assert slo.message == "the candidate's p99 latency is 120 ms; allowed: at most 100 ms"
    ratio = report.gate("p99_ratio")
    assert ratio.passed is None and ratio.value == 12.0
    assert ratio.message.startswith("waiting for data (the champion answered 10 of the 90 requests needed for its "
                                    "p99): so far the candidate's p99 latency 120 ms is 12.0× the champion's")


# --- evaluate: the promotion gates --------------------------------------------------------------------------

def test_a_healthy_candidate_on_unshifted_inputs_is_promotable():
    df = frame(shadow(300))
    report = evaluate(df, GATES, reference=reference(), now=now_after(300))
    assert [(g.name, g.passed) for g in report.gates] == [
        ("min_requests", True), ("error_rate", True), ("p99_ratio", True), ("drift", True)]
    assert report.promotable and report.breach is None
    assert report.gate("error_rate").message == ("0% of the candidate's answers were server errors (HTTP status "
                                                 "≥ 500: 0 of 300); allowed: at most 1%")
    assert report.drift.status == drift.PASS and report.drift.rows == {"reference": 2000, "live": 300}
    data = report.as_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["promotable"] is True and data["candidate"]["requests"] == 300
    assert data["since"] == "2026-03-10T09:00:00+00:00" and data["until"] == "2026-03-10T09:05:00+00:00"
    assert data["agreement"] == {"share": 1.0, "pairs": 300, "agreed": 300}
    assert [g["name"] for g in data["gates"]] == ["min_requests", "error_rate", "p99_ratio", "drift"]
    assert data["drift"]["status"] == "pass"


def test_shifted_inputs_fail_the_drift_gate():
    report = evaluate(frame(shadow(300, shift=1.5)), GATES, reference=reference(), now=now_after(300))
    gate = report.gate("drift")
    assert gate.passed is False and gate.value > 0.2 and gate.limit == 0.2
    assert gate.message.startswith(f"the largest feature drift (PSI) is {gate.value:.3f}, feature 'x1'; "
                                   "allowed: at most 0.2")
    assert report.drift.worst == "x1" and not report.promotable
    assert report.breach is None  # drift blocks a promotion, it does not roll back


def test_drift_without_reference_data_or_with_a_reference_that_does_not_fit():
    df = frame(shadow(300))
    gate = evaluate(df, GATES, reference=None).gate("drift")
    assert gate.passed is None and "mlplatform.registry.log_reference_data" in gate.message
    assert gate.message.startswith("no reference data was logged with the candidate version")
    with_label = reference().assign(label=1)
    gate = evaluate(df, GATES, reference=with_label).gate("drift")
    assert gate.passed is False
    assert gate.message.startswith("the live inputs cannot be compared with the reference data: the live data has "
                                   "no column 'label'")
    small = evaluate(df, GATES, reference=reference(n=50)).gate("drift")
    assert small.passed is None and "the reference data has 50 rows, fewer than min_rows=200" in small.message


def test_too_many_errors_fail_the_error_rate_gate():
    rows = shadow(250)
    for row in [r for r in rows if r["side"] == "candidate"][:5]:
        row.update(status=500, outputs=None)
    report = evaluate(frame(rows), GATES, reference=reference())
    gate = report.gate("error_rate")
    assert (gate.passed, gate.value, gate.limit) == (False, 0.02, 0.01)
    assert gate.message == ("2% of the candidate's answers were server errors (HTTP status ≥ 500: 5 of 250); "
                            "allowed: at most 1%")
    assert report.breach.startswith("candidate error rate 2% (5 of 250 answers") and not report.promotable


def test_the_window_and_the_endpoint_are_checked():
    rows = shadow(300)
    report = evaluate(frame(rows), GATES, reference=None, now=now_after(700))  # the first 100 s fell out
    assert report.candidate.requests == 200 and report.since == now_after(100)
    rows.append(answer(0, "champion", endpoint="other"))
    with pytest.raises(ValueError, match=r"several endpoints \(iris, other\): evaluate one endpoint's window"):
        evaluate(frame(rows), GATES, reference=None)


# --- agreement ----------------------------------------------------------------------------------------------

def test_agreement_of_mirrored_requests():
    pairs = [("[0.5, 0.25]", "[0.5000000001, 0.25]"),  # within the tolerance
             ('{"label": "a", "p": [1, 0.0]}', '{"p": [1.0, 1e-12], "label": "a"}'),  # keys in another order
             ("[1]", "[2]"), ("[true]", "[1]"), ('["a"]', '["a"]'), ("not json", "not json")]
    rows = []
    for i, (a, b) in enumerate(pairs):
        rows += [answer(i, "champion", outputs=a), answer(i, "candidate", outputs=b)]
    rows += [answer(10, "champion", outputs="[1]"), answer(10, "candidate", outputs=None, status=500),  # not a pair
             answer(11, "champion", outputs="[1]")]  # answered by one side only
    found = agreement(frame(rows))
    assert (found.pairs, found.agreed, found.share) == (6, 4, 4 / 6)
    assert agreement(frame([answer(0, "champion"), answer(1, "candidate")])) is None


# --- the catalog keys ---------------------------------------------------------------------------------------

BASE = yaml.safe_load(DEFAULT_CATALOG.read_text())


def catalog_with(**sections):
    data = copy.deepcopy(BASE)
    for path, value in sections.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def problems_of(data) -> list[str]:
    with pytest.raises(CatalogError) as e:
        parse_catalog(data, "platform.yaml", {})
    return e.value.problems


def test_defaults_and_a_teams_override_merges_over_the_platforms_gates():
    defaults = {"max_drift": 0.2, "max_p99_ratio": 1.5, "max_error_rate": 0.01, "latency_slo_ms": None,
                "min_requests": 200, "window_seconds": 600, "check_every_seconds": 15, "min_requests_for_rollback": 20,
                "warmup_requests": 20}
    assert LiveGates().model_dump() == defaults
    catalog = load_catalog(DEFAULT_CATALOG, environ={})
    # The local platform's: one machine, where a shadow candidate shares the champion's cores (hub_config/platform.yaml)
    assert catalog.promotion.live_gates.model_dump() == {**defaults, "max_p99_ratio": 2.5}
    assert catalog.live_gates_for("team-nlp") is catalog.promotion.live_gates
    data = catalog_with(promotion__live_gates={"max_error_rate": 0.02, "latency_slo_ms": 250})
    data["teams"]["team-nlp"]["live_gates"] = {"max_error_rate": 0.001, "min_requests": 500}
    catalog = parse_catalog(data, environ={})
    nlp = catalog.live_gates_for("team-nlp")
    assert (nlp.max_error_rate, nlp.min_requests, nlp.latency_slo_ms, nlp.max_drift) == (0.001, 500, 250, 0.2)
    vision = catalog.live_gates_for("team-vision")
    assert (vision.max_error_rate, vision.min_requests, vision.latency_slo_ms) == (0.02, 200, 250)
    assert catalog.promotion.live_gates.min_requests == 200  # the platform's gates are not changed
    with pytest.raises(KeyError, match="no team 'team-robots' in the catalog; teams: team-vision, team-nlp"):
        catalog.live_gates_for("team-robots")
    # The rendered catalog (what the hub and the service read) keeps the override partial.
    again = parse_catalog(yaml.safe_load(catalog_document(catalog)), environ={})
    assert again.teams["team-nlp"].live_gates == catalog.teams["team-nlp"].live_gates
    assert again.live_gates_for("team-nlp") == nlp


def test_a_teams_override_has_the_keys_and_bounds_of_the_platforms_gates():
    assert list(TeamLiveGates.model_fields) == list(LiveGates.model_fields)
    for name, spec in LiveGates.model_fields.items():
        assert TeamLiveGates.model_fields[name].metadata == spec.metadata, name


def test_catalog_errors_name_the_key_the_value_and_what_is_allowed():
    data = catalog_with(promotion__live_gates={"max_error_rate": 1.5, "check_every_seconds": 300},
                        serving__inference_log={"sample_rate": 2})
    data["teams"]["team-nlp"]["live_gates"] = {"min_requests": 5, "max_drfit": 0.3}
    assert problems_of(data) == [
        "promotion.live_gates.max_error_rate: 1.5 is not allowed: Input should be less than or equal to 1",
        "promotion.live_gates.check_every_seconds: 300 is not allowed: Input should be less than or equal to 60",
        "serving.inference_log.sample_rate: 2 is not allowed: Input should be less than or equal to 1",
        "teams.team-nlp.live_gates.min_requests: 5 is not allowed: Input should be greater than or equal to 20",
        ("teams.team-nlp.live_gates.max_drfit: unknown key 'max_drfit'; allowed keys: max_drift, max_p99_ratio, "
         "max_error_rate, latency_slo_ms, min_requests, window_seconds, check_every_seconds, min_requests_for_rollback, "
             "warmup_requests"),
    ]
    data = catalog_with(serving__inference_log={"batch_rows": 5000, "max_buffered_rows": 1000})
    data["teams"]["team-nlp"]["live_gates"] = {"min_requests_for_rollback": 300}
    assert problems_of(data) == [
        ("teams.team-nlp.live_gates: min_requests_for_rollback 300 is more than min_requests 200 (with "
         "promotion.live_gates' values for the keys the team does not set); allowed: at most min_requests (a "
         "rollback must not need more answers than a promotion)"),
        "serving.inference_log.max_buffered_rows: 1000 is less than batch_rows 5000; allowed: at least batch_rows",
    ]


def test_the_inference_log_keys_default_to_the_modules_defaults():
    assert InferenceLogSettings().model_dump() == inference_log.DEFAULTS
    assert load_catalog(DEFAULT_CATALOG, environ={}).serving.inference_log == InferenceLogSettings()
