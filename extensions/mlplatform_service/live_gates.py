"""The live gates of safe rollout (issue 12): numbers and decisions from one window of an endpoint's
inference log. No I/O: the rollout controller reads the window and the reference data and passes them in.

    df = inference_log.read_window(s3, bucket, team_prefix, "iris", now - window, now)
    gates = catalog.live_gates_for(team)                         # promotion.live_gates, the team's keys over it
    reason = live_gates.breach(df, gates)                         # every check: a rollback reason, or None
    report = live_gates.evaluate(df, gates, reference=ref, now=now)   # before a promotion (and for the widget)
    report.promotable                                             # every gate passed, none waiting for data
    report.as_dict()                                              # JSON for the API and the widget

What is counted (each side on its own: `side_stats`):
- an error is an answer with HTTP status ≥ 500 (or none logged): the service failed. A 4xx is the caller's
  mistake (a malformed body, a missing column) and is the same for either model, so it is no SLO error
  (shown as `client_errors`).
- latencies are those of every answer of the side, errors included (a caller waits for those too), but its
  warm-up: the side's first `warmup_requests` answers of its version in the window, which a replica that has
  just started answers slowly (counted as `warmup`; their errors do count). Percentiles are numpy's (linear
  interpolation).
- only the side's current model version counts: the version of its latest record in the window. Answers
  of a version replaced within the window are left out (`other_versions`), so a new candidate is never
  promoted, nor rolled back, on its predecessor's answers.
- counts are of logged answers, after `serving.inference_log.sample_rate`.

The gates of a promotion (`evaluate`), each passed (True), failed (False) or waiting for data (None):
`min_requests` (the candidate's answers), `error_rate`, `p99_ratio` (candidate p99 over the champion's;
the champion needs `min_requests` answers too), `latency_slo` (only when `latency_slo_ms` is set) and
`drift` (`mlplatform_service.drift` on the live inputs of the window against the candidate's reference
data). The drift gate compares the inputs of every request of the window, whichever side answered it,
one copy per request (`inference_log.input_frame`): what the candidate will see once it is champion is
the endpoint's traffic, and in canary mode the candidate's own share would reach `min_requests` rows
later for no better answer. Agreement (mirrored requests answered alike) is shown, not gated: a better
model is expected to disagree sometimes.

A rollback (`breach`) needs `min_requests_for_rollback` answers of the candidate: its error rate above
`max_error_rate`, its p99 above `latency_slo_ms`, or above `max_p99_ratio` × the champion's p99 (the
champion with at least `min_requests_for_rollback` answers too). A latency breach also needs at least
MIN_SLOW_ANSWERS answers past the warm-up over the bound: with few answers a p99 is the slowest one, and one
slow answer (a pause of the collector) must not roll a candidate back.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlplatform.serving.inference_log import COLUMNS, SIDES, input_frame

from . import drift

if TYPE_CHECKING:
    import pandas as pd
    from mlplatform_core.catalog import LiveGates

# Outputs agree when their JSON is equal, numbers within this relative (or, near zero, absolute) tolerance:
# float32 and float64 builds of one model, or two serializers, differ in the last digits.
REL_TOL = 1e-6
ABS_TOL = 1e-9
MIN_SLOW_ANSWERS = 2
HOW_TO_LOG_REFERENCE = ("log it at training time, in the model's run: mlplatform.registry.log_reference_data(X_train) "
                        "(the model's input columns, not the label)")


@dataclass(frozen=True)
class SideStats:
    """One side's answers in the window (its current model version only)."""

    side: str  # "champion" | "candidate"
    model_version: str | None  # the version counted: that of the side's latest record; None without records
    requests: int  # answers logged
    errors: int  # status ≥ 500 (or none)
    client_errors: int  # status 4xx: not SLO errors
    error_rate: float | None  # errors / requests; None without answers
    p50_ms: float | None
    p99_ms: float | None
    rate_per_s: float | None  # answers per second over the window's span; None when it has none
    other_versions: int = 0  # answers of other versions of this side, left out
    warmup: int = 0  # the side's first answers of its version, left out of its latencies
    # The answers' latencies, sorted (how many were slower than a bound); not in as_dict.
    latencies_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def slower_than(self, bound_ms: float) -> int:
        """How many answers took longer than `bound_ms`."""
        return len(self.latencies_ms) - bisect_right(self.latencies_ms, bound_ms)

    def as_dict(self) -> dict:
        return {"side": self.side, "model_version": self.model_version, "requests": self.requests,
                "errors": self.errors, "client_errors": self.client_errors, "error_rate": _json(self.error_rate),
                "p50_ms": _json(self.p50_ms), "p99_ms": _json(self.p99_ms), "rate_per_s": _json(self.rate_per_s),
                "other_versions": self.other_versions, "warmup": self.warmup}


@dataclass(frozen=True)
class Agreement:
    """Mirrored requests (answered by both sides, both with status 200) whose outputs are equal."""

    pairs: int
    agreed: int

    @property
    def share(self) -> float:
        return self.agreed / self.pairs

    def as_dict(self) -> dict:
        return {"share": self.share, "pairs": self.pairs, "agreed": self.agreed}


@dataclass(frozen=True)
class Gate:
    """One gate: passed (True), failed (False) or waiting for data (None); its number, its limit, and a
    sentence that says both."""

    name: str
    passed: bool | None
    value: float | None
    limit: float | None
    message: str

    def as_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "value": _json(self.value), "limit": _json(self.limit),
                "message": self.message}


@dataclass(frozen=True)
class LiveReport:
    """What `evaluate` found in one window: both sides' numbers, agreement, drift, the gates, and the
    rollback reason if the candidate breaches the SLO (`breach`)."""

    endpoint: str | None
    mode: str | None  # the candidate's latest record's mode ("shadow" | "canary"), None without candidate
    since: datetime | None  # the span the rates are over
    until: datetime | None
    champion: SideStats
    candidate: SideStats
    agreement: Agreement | None
    drift: drift.DriftReport | None
    gates: tuple[Gate, ...]
    breach: str | None

    @property
    def promotable(self) -> bool:
        """Every gate passed; none failed or waits for data."""
        return all(g.passed is True for g in self.gates)

    def gate(self, name: str) -> Gate:
        """The gate called `name`; KeyError naming the gates there are."""
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(f"no gate {name!r}; gates: {', '.join(g.name for g in self.gates)}")

    def as_dict(self) -> dict:
        """JSON-serializable (times as ISO 8601, no infinities), for the API and the widget."""
        return {"endpoint": self.endpoint, "mode": self.mode,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "champion": self.champion.as_dict(), "candidate": self.candidate.as_dict(),
                "agreement": self.agreement.as_dict() if self.agreement else None,
                "drift": self.drift.as_dict() if self.drift else None,
                "gates": [g.as_dict() for g in self.gates], "promotable": self.promotable, "breach": self.breach}


# --- the numbers --------------------------------------------------------------------------------------------

def side_stats(df: pd.DataFrame, side: str, *, now: datetime | None = None, window_seconds: float | None = None,
               version: str | None = None, warmup: int = 0) -> SideStats:
    """`side`'s numbers in read_window's frame. `now` and `window_seconds` bound the window to [now −
    window_seconds, now) (records outside are left out) and set the span the rate is over: from the
    window's start or the frame's first record, whichever is later, to `now` (without `now`: the frame's
    last record). `version`: the model version to count (default: that of the side's latest record).
    `warmup`: how many of its first answers are left out of its latencies."""
    if side not in SIDES:
        raise ValueError(f"side {side!r} is not allowed: give one of {', '.join(SIDES)}")
    frame = _window(_checked(df), now, window_seconds)
    since, until = _span(frame, now, window_seconds)
    return _stats(*_current(frame, side, version), since, until, side=side, warmup=warmup)


def agreement(df: pd.DataFrame) -> Agreement | None:
    """Of the requests answered by both sides with status 200 (mirrored: the same request_id), how many got
    equal outputs (parsed JSON; numbers within REL_TOL, or ABS_TOL near zero); None without such pairs."""
    df = _checked(df)
    ok = df[df["status"] == 200]
    champion = ok[ok["side"] == "champion"].drop_duplicates("request_id").set_index("request_id")["outputs"]
    candidate = ok[ok["side"] == "candidate"].drop_duplicates("request_id").set_index("request_id")["outputs"]
    both = champion.index.intersection(candidate.index)
    if not len(both):
        return None
    agreed = sum(_same_output(champion[rid], candidate[rid]) for rid in both)
    return Agreement(pairs=len(both), agreed=int(agreed))


# --- the decisions -----------------------------------------------------------------------------------------

def evaluate(df: pd.DataFrame, gates: LiveGates, *, reference: pd.DataFrame | None, now: datetime | None = None,
             candidate_version: str | None = None) -> LiveReport:
    """The live gates of a promotion on one window of the inference log (read_window's frame). `reference`:
    the candidate version's reference data (`mlplatform.registry.load_reference_data`), None when none was
    logged (the drift gate then waits, saying how to log it). `now`: the window's end (records in [now −
    gates.window_seconds, now) count); default: the whole frame. `candidate_version`: the version to judge
    (default: that of the candidate's latest record)."""
    frame = _window(_checked(df), now, gates.window_seconds)
    endpoint = _endpoint(frame)
    champion_rows, champion_version, champion_others = _current(frame, "champion", None)
    candidate_rows, candidate_version, candidate_others = _current(frame, "candidate", candidate_version)
    since, until = _span(frame, now, gates.window_seconds)
    champion = _stats(champion_rows, champion_version, champion_others, since, until, side="champion",
                      warmup=gates.warmup_requests)
    candidate = _stats(candidate_rows, candidate_version, candidate_others, since, until, side="candidate",
                       warmup=gates.warmup_requests)
    import pandas as pd

    current = pd.concat([champion_rows, candidate_rows])
    mode = str(candidate_rows["mode"].iloc[-1]) if len(candidate_rows) else None
    report_drift, drift_gate = _drift_gate(current, gates, reference, endpoint, candidate_version)
    checks = [_min_requests_gate(candidate, gates), _error_rate_gate(candidate, gates),
              _p99_ratio_gate(champion, candidate, gates)]
    if gates.latency_slo_ms is not None:
        checks.append(_latency_slo_gate(candidate, gates))
    checks.append(drift_gate)
    return LiveReport(endpoint=endpoint, mode=mode, since=since, until=until, champion=champion,
                      candidate=candidate, agreement=agreement(current), drift=report_drift, gates=tuple(checks),
                      breach=_breach(champion, candidate, gates))


def breach(report_or_df: LiveReport | pd.DataFrame, gates: LiveGates, *, now: datetime | None = None) -> str | None:
    """Why traffic must go back to the champion now, or None: the candidate, with at least
    `min_requests_for_rollback` answers, breaches the SLO (every breach found, "; " between them). A frame
    (read_window's) is reduced to both sides' numbers first (`now`: as in `evaluate`); cheaper than `evaluate`
    (no drift, no agreement)."""
    if isinstance(report_or_df, LiveReport):
        return _breach(report_or_df.champion, report_or_df.candidate, gates)
    frame = _window(_checked(report_or_df), now, gates.window_seconds)
    since, until = _span(frame, now, gates.window_seconds)
    sides = {side: _stats(*_current(frame, side, None), since, until, side=side, warmup=gates.warmup_requests)
             for side in SIDES}
    return _breach(sides["champion"], sides["candidate"], gates)


def _breach(champion: SideStats, candidate: SideStats, gates: LiveGates) -> str | None:
    n = candidate.requests
    if n < gates.min_requests_for_rollback:
        return None
    over = f"over {n} requests"
    reasons = []
    if candidate.error_rate > gates.max_error_rate:
        reasons.append(f"candidate error rate {_pct(candidate.error_rate)} ({candidate.errors} of {n} answers with "
                       f"HTTP status ≥ 500) is above the allowed {_pct(gates.max_error_rate)}")
    if candidate.p99_ms is None:
        return "; ".join(reasons) or None
    if gates.latency_slo_ms is not None and candidate.p99_ms > gates.latency_slo_ms \
            and candidate.slower_than(gates.latency_slo_ms) >= MIN_SLOW_ANSWERS:
        reasons.append(f"candidate p99 {_ms(candidate.p99_ms)} is above the latency SLO of "
                       f"{_ms(gates.latency_slo_ms)} {over}")
    if champion.requests >= gates.min_requests_for_rollback and champion.p99_ms is not None:
        bound = gates.max_p99_ratio * champion.p99_ms
        if candidate.p99_ms > bound and candidate.slower_than(bound) >= MIN_SLOW_ANSWERS:
            reasons.append(f"candidate p99 {_ms(candidate.p99_ms)} is {_ratio(candidate.p99_ms, champion.p99_ms)} "
                           f"the champion's {_ms(champion.p99_ms)} (allowed: {gates.max_p99_ratio:g}×) {over}")
    return "; ".join(reasons) or None


# --- the gates ---------------------------------------------------------------------------------------------

def _min_requests_gate(candidate: SideStats, gates: LiveGates) -> Gate:
    n, need = candidate.requests, gates.min_requests
    if n >= need:
        return Gate("min_requests", True, n, need, f"the candidate answered {n} requests in the window; "
                    f"at least {need} are needed")
    return Gate("min_requests", None, n, need, f"waiting for data: the candidate answered {n} requests in the "
                f"window; {need} are needed before a promotion ({need - n} more)")


def _waiting(name: str, candidate: SideStats, gates: LiveGates, value: float | None, limit: float | None,
             said: str) -> Gate:
    return Gate(name, None, value, limit, f"waiting for data ({candidate.requests} of the {gates.min_requests} "
                f"candidate answers needed): so far {said}")


def _error_rate_gate(candidate: SideStats, gates: LiveGates) -> Gate:
    rate, limit = candidate.error_rate, gates.max_error_rate
    if rate is None:
        return Gate("error_rate", None, None, limit, "waiting for data: the candidate answered no requests in the "
                    "window")
    said = (f"{_pct(rate)} of the candidate's answers were server errors (HTTP status ≥ 500: "
            f"{candidate.errors} of {candidate.requests}); allowed: at most {_pct(limit)}")
    if candidate.requests < gates.min_requests:
        return _waiting("error_rate", candidate, gates, rate, limit, said)
    return Gate("error_rate", rate <= limit, rate, limit, said)


def _p99_ratio_gate(champion: SideStats, candidate: SideStats, gates: LiveGates) -> Gate:
    limit = gates.max_p99_ratio
    if candidate.p99_ms is None or champion.p99_ms is None:
        return Gate("p99_ratio", None, None, limit, _no_latencies(candidate if candidate.p99_ms is None else champion))
    ratio = _divide(candidate.p99_ms, champion.p99_ms)
    said = (f"the candidate's p99 latency {_ms(candidate.p99_ms)} is {_ratio(candidate.p99_ms, champion.p99_ms)} "
            f"the champion's {_ms(champion.p99_ms)}; allowed: at most {limit:g}×")
    if candidate.requests < gates.min_requests:
        return _waiting("p99_ratio", candidate, gates, ratio, limit, said)
    if champion.requests < gates.min_requests:
        return Gate("p99_ratio", None, ratio, limit, f"waiting for data (the champion answered {champion.requests} "
                    f"of the {gates.min_requests} requests needed for its p99): so far {said}")
    return Gate("p99_ratio", ratio <= limit, ratio, limit, said)


def _no_latencies(stats: SideStats) -> str:
    if not stats.requests:
        return f"waiting for data: the {stats.side} answered no requests in the window"
    return (f"waiting for data: the {stats.side}'s {stats.requests} answers in the window are all its warm-up (its "
            f"first {stats.warmup}, left out of its latencies)")


def _latency_slo_gate(candidate: SideStats, gates: LiveGates) -> Gate:
    limit = gates.latency_slo_ms
    if candidate.p99_ms is None:
        return Gate("latency_slo", None, None, limit, _no_latencies(candidate))
    said = f"the candidate's p99 latency is {_ms(candidate.p99_ms)}; allowed: at most {_ms(limit)}"
    if candidate.requests < gates.min_requests:
        return _waiting("latency_slo", candidate, gates, candidate.p99_ms, limit, said)
    return Gate("latency_slo", candidate.p99_ms <= limit, candidate.p99_ms, limit, said)


def _drift_gate(frame: pd.DataFrame, gates: LiveGates, reference: pd.DataFrame | None, endpoint: str | None,
                version: str | None) -> tuple[drift.DriftReport | None, Gate]:
    limit = gates.max_drift
    if reference is None:
        return None, Gate("drift", None, None, limit, "no reference data was logged with the candidate version, so "
                          f"drift cannot be measured; {HOW_TO_LOG_REFERENCE}")
    live = input_frame(frame)
    if not len(live):
        return None, Gate("drift", None, None, limit, "waiting for data: no request of the window has input rows "
                          f"to compare with the reference data ({gates.min_requests} rows are needed)")
    subject = f"endpoint {endpoint}, candidate version {version}" if endpoint else None
    try:
        report = drift.compare(reference, live, threshold=limit, min_rows=gates.min_requests, subject=subject)
    except ValueError as e:  # the live inputs do not fit the reference: more traffic will not change that
        return None, Gate("drift", False, None, limit, f"the live inputs cannot be compared with the reference "
                          f"data: {e}; the reference must hold the model's input columns, {HOW_TO_LOG_REFERENCE}")
    if report.status == drift.INSUFFICIENT:
        return report, Gate("drift", None, None, limit, f"waiting for data: {report.reason}")
    worst = report.worst
    said = (f"the largest feature drift (PSI) is {report.score:.3f}, feature {worst!r}; allowed: at most {limit:g} "
            f"({report.reason})")
    return report, Gate("drift", report.passed, report.score, limit, said)


# --- helpers -----------------------------------------------------------------------------------------------

def _checked(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"the window is a {type(df).__name__}: give the DataFrame of inference_log.read_window")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"the window has no column {', '.join(map(repr, missing))}: give the DataFrame of "
                         f"inference_log.read_window (columns: {', '.join(COLUMNS)})")
    return df


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _times(frame: pd.DataFrame):
    import pandas as pd

    return pd.to_datetime(frame["time"], utc=True)


def _window(frame: pd.DataFrame, now: datetime | None, window_seconds: float | None) -> pd.DataFrame:
    """The records of [now − window_seconds, now), in time order (stable: the frame's order among equals)."""
    if len(frame):
        times = _times(frame)
        if now is not None:
            now = _utc(now)
            keep = times < now
            if window_seconds is not None:
                keep &= times >= now - timedelta(seconds=window_seconds)
            frame, times = frame[keep], times[keep]
        frame = frame.iloc[times.argsort(kind="stable")]
    return frame


def _span(frame: pd.DataFrame, now: datetime | None, window_seconds: float | None) -> tuple[datetime | None,
                                                                                           datetime | None]:
    if not len(frame):
        return None, None
    times = _times(frame)
    first = times.min().to_pydatetime()
    until = _utc(now) if now is not None else times.max().to_pydatetime()
    since = first if now is None or window_seconds is None else max(first, until - timedelta(seconds=window_seconds))
    return since, until


def _endpoint(frame: pd.DataFrame) -> str | None:
    names = sorted({str(e) for e in frame["endpoint"].dropna()})
    if len(names) > 1:
        raise ValueError(f"the window holds records of several endpoints ({', '.join(names)}): evaluate one "
                         "endpoint's window (inference_log.read_window reads one)")
    return names[0] if names else None


def _current(frame: pd.DataFrame, side: str, version: str | None) -> tuple[pd.DataFrame, str | None, int]:
    """(`side`'s records of `version` (default: the version of its latest record), that version, how many
    records of other versions were left out)."""
    rows = frame[frame["side"] == side]
    if not len(rows):
        return rows, version, 0
    if version is None:
        version = str(rows["model_version"].iloc[-1])
    mine = rows["model_version"].astype(str) == str(version)
    return rows[mine], version, int((~mine).sum())


def _stats(rows: pd.DataFrame, version: str | None, others: int, since: datetime | None, until: datetime | None,
           *, side: str, warmup: int) -> SideStats:
    """The numbers of one side's `rows` (in time order); the first `warmup` rows are left out of the latencies."""
    import numpy as np

    n = len(rows)
    status = rows["status"].to_numpy(dtype=float, na_value=np.nan)
    errors = int((np.isnan(status) | (status >= 500)).sum())
    client_errors = int(((status >= 400) & (status < 500)).sum())
    latency = np.sort(rows["latency_ms"].to_numpy(dtype=float, na_value=np.nan)[warmup:])
    latency = latency[np.isfinite(latency)]
    p50 = float(np.percentile(latency, 50)) if len(latency) else None
    p99 = float(np.percentile(latency, 99)) if len(latency) else None
    seconds = (until - since).total_seconds() if since is not None and until is not None else 0.0
    rate = n / seconds if n and seconds > 0 else None
    return SideStats(side=side, model_version=version if n else None, requests=n, errors=errors,
                     client_errors=client_errors, error_rate=errors / n if n else None, p50_ms=p50, p99_ms=p99,
                     rate_per_s=rate, other_versions=others, warmup=min(warmup, n),
                     latencies_ms=tuple(latency.tolist()))


def _same_output(a: Any, b: Any) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False  # an answer without outputs (a missing value) agrees with nothing
    try:
        return _same(json.loads(a), json.loads(b))
    except ValueError:
        return a == b  # not JSON: the text itself


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _divide(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return 1.0 if a <= 0 else math.inf


def _json(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _pct(share: float) -> str:
    return f"{share * 100:.3g}%"


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _ratio(a: float, b: float) -> str:
    ratio = _divide(a, b)
    return "infinitely many times" if math.isinf(ratio) else f"{ratio:.1f}×"
