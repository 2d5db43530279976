"""Feature drift of live inputs against the model's reference data: the drift gate of safe rollout (issue 12).

    from mlplatform_service import drift
    report = drift.compare(reference, live)        # DataFrames: the reference logged with the model, a live window
    report.status                                  # "pass", "fail" or "insufficient" (too few rows: neither)
    report.score                                   # the gate's number: the largest per-feature PSI
    report.per_feature["x1"].score                 # each feature's PSI, its method and whether it drifted
    drift.store_report(report, run_id=mv.run_id, client=client)   # drift/report.html and drift/report.json

The reference is what the data scientist logged with the model at training time
(`mlplatform.registry.log_reference_data`, read back with `load_reference_data`); the live window is what
the inference log recorded of the candidate's inputs. The gate passes only when `status == "pass"`:
`drifted` is None when there is too little data to tell, so `not report.drifted` is no pass.

The method, one per kind of feature, and the gate's number: the Population Stability Index (PSI),
`Σ (live − ref) · ln(live / ref)` over the proportions of rows in each bin, the largest over the
features (0.2 is the classic "significant shift" level of PSI, and the founding documents' threshold).
- numeric features (int, float; nullable ones too): 10 bins fixed by the reference's deciles (edges
  -inf, the 10th … 90th percentiles, +inf; tied percentiles merge), the same edges for the live data;
  missing and infinite values are one more bin, shown when either side has some.
- categorical features (str, category, bool): one bin per category of the reference (at most
  MAX_CATEGORIES), one "(other)" bin for live values the reference never had, one "(missing)" bin.
- an empty bin counts as 0.0001 of the rows (as Evidently's PSI does), so a category that is new or gone
  gives a large but finite PSI.
The statistics are scipy's, not written here: PSI is the symmetric Kullback–Leibler divergence of the two
binned distributions, `KL(live‖ref) + KL(ref‖live)` (the same sum, term by term), computed with
`scipy.stats.entropy`; beside it each feature shows a second opinion that does not decide the gate, the
two-sample Kolmogorov–Smirnov test for numeric features (`scipy.stats.ks_2samp`) and the chi-square
test of the two histograms for categorical ones (`scipy.stats.chi2_contingency`). The same inputs give
the same report, byte for byte (no sampling, no time in it).

Why not Evidently (issue 12's example), measured here on 2026-12-02 with Python 3.11 and the lock
(numpy 2.4.6, pandas 3.1.1, scipy 1.17.1, pydantic 2.14.4):
- evidently 0.7.23 (the newest) installs with the lock's pins (no pin conflicts: its metadata asks for
  pandas>=1.3.5, no upper bound), but it cannot be imported: `import evidently` fails with
  "ImportError: cannot import name 'infer_dtype_from_object' from 'pandas.core.dtypes.common'", a pandas
  internal removed in pandas 3 (evidently/legacy/tests/data_integrity_tests.py; every entry point, the
  new API's Report and DataDriftPreset included, goes through it). Making it work would take at least
  pandas < 3 for the whole platform (not tried).
- it would add 30 distributions to the lock (evidently, plotly 5 (it wants < 6), statsmodels, nltk,
  litestar, faker, polyfactory, dynaconf, iterative-telemetry, typer, ...; 265 MB), 52 to the hub image
  (815 MB, scikit-learn among them, which the hub's extra must not install: tests/unit/test_installs.py),
  and took 4.3 to 5.1 s (300 MB) to import as far as the failure.
The other drift libraries are no better (their metadata read; popmon installed and run): alibi-detect
0.13.0 requires numpy < 2 and pandas < 3; frouros 0.9.0 numpy < 2.2 and scipy < 1.15; nannyml 0.13.1
brings scikit-learn, LightGBM, FLAML, s3fs and a telemetry client; popmon 1.4.12 installs with the lock
but its histogram library fails on pandas 3's string columns, and its PSI is computed on bin counts
instead of proportions (an unshifted feature scored 6994). whylogs (last release 2024-12) and deepchecks
(2024-12; scikit-learn) are not kept up. scipy is well kept, is already in the lock (no new
distribution), and with numpy, pandas and pyarrow (the reference and the inference log are Parquet) adds
4 distributions, 372 MB, to the hub image (its venv of the extra alone: 414 MB before, 786 MB after);
`import pandas, scipy.stats, pyarrow.parquet` takes 1.5 to 2.0 s (200 MB), which this module pays only
when `compare` first runs. The HTML report is this module's own (one self-contained page, SVG bars, no
script), since scipy has none.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

THRESHOLD = 0.2
# Below this many rows on either side the gate shows "insufficient data". With 10 bins, PSI of two samples
# of one distribution is about 9 × (1/live + 1/reference): 0.05 for 200 live rows, where a false alarm at
# 0.2 is rarer than 1 in 10,000 per feature (1 in 50 at 100 rows).
MIN_ROWS = 200
BINS = 10
FLOOR = 0.0001
MAX_CATEGORIES = 50
PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient"
METHOD = "psi"
BINNING = {"numeric": "10 bins at the reference's deciles", "categorical": "the reference's categories"}
MISSING, OTHER = "(missing)", "(other)"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature: its PSI (`score`), how it was measured, whether it is over the threshold, and the bins."""

    name: str
    kind: str  # "numeric" or "categorical"
    method: str  # "psi"
    score: float
    drifted: bool
    bins: list[str]
    reference: list[float]  # proportion of the reference's rows in each bin
    live: list[float]  # proportion of the live rows in each bin
    test: str  # the second opinion: "ks" or "chi2"
    statistic: float | None
    p_value: float | None
    unseen: list[str] = field(default_factory=list)  # live categories the reference never had (first 10)

    def as_dict(self) -> dict:
        return {"score": self.score, "method": self.method, "kind": self.kind, "drifted": self.drifted,
                "bins": self.bins, "reference": self.reference, "live": self.live,
                "test": {"name": self.test, "statistic": self.statistic, "p_value": self.p_value},
                "unseen": self.unseen}


@dataclass(frozen=True)
class DriftReport:
    """What `compare` found. `status` is "pass" (score ≤ threshold), "fail" (score > threshold) or
    "insufficient" (too few rows: `score` and `drifted` are None, `per_feature` is empty, `reason` says why)."""

    status: str
    score: float | None
    drifted: bool | None
    threshold: float
    min_rows: int
    rows: dict[str, int]  # {"reference": n, "live": n}
    features: list[str]
    per_feature: dict[str, FeatureDrift]
    reason: str
    html: str = field(repr=False)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def worst(self) -> str | None:
        """The feature with the largest score (the first of them on a tie), None when insufficient."""
        if not self.per_feature:
            return None
        return max(self.per_feature.values(), key=lambda f: f.score).name

    def as_dict(self) -> dict:
        """JSON-serializable, for the API and drift/report.json (everything but the HTML)."""
        return {"status": self.status, "score": self.score, "drifted": self.drifted, "threshold": self.threshold,
                "min_rows": self.min_rows, "rows": dict(self.rows), "features": list(self.features),
                "worst": self.worst, "reason": self.reason, "method": METHOD,
                "per_feature": {name: f.as_dict() for name, f in self.per_feature.items()}}


def compare(reference: pd.DataFrame, live: pd.DataFrame, *, features: list[str] | None = None,
            threshold: float = THRESHOLD, min_rows: int = MIN_ROWS, subject: str | None = None) -> DriftReport:
    """Drift of each feature of `live` against `reference`, the gate's verdict and an HTML report.

    `features`: the columns to compare (default: every column of the reference). `threshold`: the gate
    fails when the largest PSI is above it. `min_rows`: fewer rows than this on either side gives
    "insufficient", neither pass nor fail. `subject` names what is compared in the report's title
    ("model iris v3"). A ValueError names the column, the value and what is allowed."""
    import pandas as pd

    threshold, min_rows = _check_options(threshold, min_rows)
    for side, frame in (("reference", reference), ("live", live)):
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"the {side} data is a {type(frame).__name__}: give a pandas DataFrame")
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        if duplicated:
            raise ValueError(f"the {side} data has duplicated columns: {', '.join(duplicated)}")
    names = _features(reference, live, features)
    kinds = {name: _kind(name, reference[name], live[name]) for name in names}
    rows = {"reference": len(reference), "live": len(live)}
    short = [f"{side} data has {n} rows" for side, n in rows.items() if n < min_rows]
    if short:
        reason = f"insufficient data: the {' and the '.join(short)}, fewer than min_rows={min_rows}"
        return _report(INSUFFICIENT, None, None, threshold, min_rows, rows, names, {}, reason, subject)
    per_feature = {name: (_numeric if kinds[name] == "numeric" else _categorical)(
        name, reference[name], live[name], threshold) for name in names}
    score = max(f.score for f in per_feature.values())
    worst = max(per_feature.values(), key=lambda f: f.score)
    drifted = score > threshold
    count = sum(f.drifted for f in per_feature.values())
    reason = (f"{count} of {len(names)} features drifted; the largest PSI is {score:.4f} ({worst.name!r}), "
              f"{'above' if drifted else 'at or below'} the threshold {threshold:g}")
    return _report(FAIL if drifted else PASS, score, drifted, threshold, min_rows, rows, names, per_feature, reason,
                   subject)


def store_report(report: DriftReport, *, run_id: str, client, artifact_file: str = "drift/report.html",
                 json_file: str | None = None) -> dict[str, str]:
    """Keep the report as artifacts of the run (the candidate version's run): the HTML at `artifact_file`
    and `as_dict()` as JSON beside it (default: the same path ending in .json). `client` is an
    MlflowClient (the platform's). Returns {"html": path, "json": path}, relative to the run's artifacts.
    Each call replaces the files at those paths."""
    if not isinstance(report, DriftReport):
        raise ValueError(f"report is a {type(report).__name__}: give the DriftReport of drift.compare")
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError(f"run_id {run_id!r} is not allowed: give the MLflow run id of the candidate version")
    html_path = PurePosixPath(artifact_file)
    json_path = PurePosixPath(json_file) if json_file else html_path.with_suffix(".json")
    if html_path.is_absolute() or ".." in html_path.parts or html_path == json_path:
        raise ValueError(f"artifact_file {artifact_file!r} is not allowed: give a relative path such as "
                         "'drift/report.html' (and a json_file other than it)")
    client.log_text(run_id, report.html, str(html_path))
    client.log_text(run_id, json.dumps(report.as_dict(), indent=1, sort_keys=True), str(json_path))
    return {"html": str(html_path), "json": str(json_path)}


# --- checks -------------------------------------------------------------------------------------------

def _check_options(threshold, min_rows) -> tuple[float, int]:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or threshold <= 0:
        raise ValueError(f"threshold {threshold!r} is not allowed: give a number above 0 (default {THRESHOLD})")
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise ValueError(f"min_rows {min_rows!r} is not allowed: give a whole number of at least 1 "
                         f"(default {MIN_ROWS})")
    return float(threshold), min_rows


def _features(reference, live, features) -> list[str]:
    if features is None:
        names = list(reference.columns)
    elif isinstance(features, str) or not all(isinstance(f, str) for f in features):
        raise ValueError(f"features {features!r} is not allowed: give a list of column names")
    else:
        names = list(features)
    if not names:
        raise ValueError("no features to compare: the reference data has no columns and features= names none")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"features= names {', '.join(map(repr, repeated))} more than once: name each column once")
    for side, frame in (("reference", reference), ("live", live)):
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise ValueError(f"the {side} data has no column {', '.join(map(repr, missing))}; its columns: "
                             f"{', '.join(map(repr, map(str, frame.columns))) or 'none'}")
    return names


def _kind(name: str, reference, live) -> str:
    kinds = {side: _kind_of(name, side, series) for side, series in (("reference", reference), ("live", live))}
    if kinds["reference"] != kinds["live"]:
        raise ValueError(f"feature {name!r} is {kinds['reference']} ({reference.dtype}) in the reference data but "
                         f"{kinds['live']} ({live.dtype}) in the live data: the live inputs must have the "
                         "reference's types")
    return kinds["reference"]


def _kind_of(name: str, side: str, series) -> str:
    import pandas as pd
    from pandas.api import types

    dtype = series.dtype
    if types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if types.is_numeric_dtype(dtype) and not types.is_complex_dtype(dtype):
        return "numeric"
    if types.is_object_dtype(dtype):  # strings (and missing values) only: pandas says "string"
        if types.infer_dtype(series, skipna=True) in ("string", "empty"):
            return "categorical"
    elif types.is_string_dtype(dtype):
        return "categorical"
    raise ValueError(f"feature {name!r} has dtype {dtype} in the {side} data "
                     f"({types.infer_dtype(series, skipna=True)} values): drift is measured for numeric (int, "
                     "float), boolean and categorical (str, category) features; leave it out with features=[...]")


# --- the statistics -----------------------------------------------------------------------------------

def _proportions(counts) -> list[float]:
    total = sum(counts)
    return [round(c / total, 6) if total else 0.0 for c in counts]


def _psi(reference_counts, live_counts) -> float:
    """PSI of two histograms: KL(live‖ref) + KL(ref‖live) of their proportions, empty bins at FLOOR."""
    import numpy as np
    from scipy.stats import entropy

    ref = np.maximum(np.asarray(reference_counts, float) / max(sum(reference_counts), 1), FLOOR)
    cur = np.maximum(np.asarray(live_counts, float) / max(sum(live_counts), 1), FLOOR)
    return round(float(entropy(cur, ref) + entropy(ref, cur)), 6)


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{float(value):.6g}")


def _label(x: float) -> str:
    return f"{x:.4g}"


def _numeric(name: str, reference, live, threshold: float) -> FeatureDrift:
    import numpy as np
    from scipy.stats import ks_2samp

    def values(series):
        array = series.to_numpy(dtype=float, na_value=np.nan)
        finite = np.isfinite(array)
        return array[finite], int((~finite).sum())

    ref, ref_missing = values(reference)
    cur, cur_missing = values(live)
    if not len(ref):
        raise ValueError(f"feature {name!r} has no values in the reference data (all {len(reference)} are missing "
                         "or infinite): leave it out with features=[...]")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, BINS + 1)[1:-1]))  # the inner edges, from the reference
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1).tolist()
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1).tolist()
    bins = ([f"< {_label(edges[0])}"] + [f"[{_label(a)}, {_label(b)})" for a, b in zip(edges, edges[1:])]
            + [f"≥ {_label(edges[-1])}"])
    if ref_missing or cur_missing:
        bins.append(MISSING)
        ref_counts.append(ref_missing)
        cur_counts.append(cur_missing)
    statistic = p_value = None
    if len(cur):
        ks = ks_2samp(ref, cur)
        statistic, p_value = _finite(ks.statistic), _finite(ks.pvalue)
    score = _psi(ref_counts, cur_counts)
    return FeatureDrift(name, "numeric", METHOD, score, score > threshold, bins,
                        _proportions(ref_counts), _proportions(cur_counts), "ks", statistic, p_value)


def _categorical(name: str, reference, live, threshold: float) -> FeatureDrift:
    import numpy as np
    from scipy.stats import chi2_contingency

    def labels(series):
        present = series.dropna()
        return present.map(str).value_counts(sort=False).to_dict(), len(series) - len(present)

    ref, ref_missing = labels(reference)
    cur, cur_missing = labels(live)
    if len(ref) > MAX_CATEGORIES:
        raise ValueError(f"feature {name!r} has {len(ref)} distinct values in the reference data, more than "
                         f"{MAX_CATEGORIES}: drift by category needs a categorical feature (not an identifier "
                         "or free text); leave it out with features=[...]")
    categories = sorted(ref, key=lambda c: (-ref[c], c))  # most frequent in the reference first
    unseen = sorted(set(cur) - set(ref), key=lambda c: (-cur[c], c))
    bins = list(categories)
    ref_counts = [ref[c] for c in categories]
    cur_counts = [cur.get(c, 0) for c in categories]
    if unseen:
        bins.append(OTHER)
        ref_counts.append(0)
        cur_counts.append(sum(cur[c] for c in unseen))
    if ref_missing or cur_missing:
        bins.append(MISSING)
        ref_counts.append(ref_missing)
        cur_counts.append(cur_missing)
    statistic = p_value = None
    table = np.array([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] > 1 and (table.sum(axis=1) > 0).all():
        chi2 = chi2_contingency(table)
        statistic, p_value = _finite(chi2.statistic), _finite(chi2.pvalue)
    score = _psi(ref_counts, cur_counts)
    return FeatureDrift(name, "categorical", METHOD, score, score > threshold, bins,
                        _proportions(ref_counts), _proportions(cur_counts), "chi2", statistic, p_value,
                        unseen[:10])


# --- the HTML report ----------------------------------------------------------------------------------

REF_COLOUR, LIVE_COLOUR = "#0072B2", "#E69F00"  # Okabe–Ito, as the usage charts
STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37}.fail{color:#b3261e}.insufficient{color:#7a5c00}section{margin-top:24px}
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}"""


def _report(status, score, drifted, threshold, min_rows, rows, names, per_feature, reason, subject) -> DriftReport:
    html = _html(status, score, threshold, min_rows, rows, per_feature, reason, subject)
    return DriftReport(status, score, drifted, threshold, min_rows, rows, names, per_feature, reason, html)


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _bars(feature: FeatureDrift) -> str:
    """Grouped bars, reference and live, one group per bin; a <title> on each bar gives its value."""
    group, bar, height, top, bottom = 56, 22, 160, 12, 64
    width = 48 + group * len(feature.bins) + 64  # room for the last slanted label
    peak = max([*feature.reference, *feature.live, 0.01])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + top + bottom}" '
             f'role="img" aria-label="{escape(feature.name)}: reference and live proportions per bin">',
             f'<line x1="44" y1="{top + height}" x2="{width}" y2="{top + height}" stroke="#888"/>',
             f'<text x="40" y="{top + 4}" font-size="10" text-anchor="end">{peak:.0%}</text>']
    for i, label in enumerate(feature.bins):
        x = 48 + i * group
        for j, (side, value, colour) in enumerate((("reference", feature.reference[i], REF_COLOUR),
                                                    ("live", feature.live[i], LIVE_COLOUR))):
            h = round(height * value / peak, 1)
            parts.append(f'<rect x="{x + j * bar}" y="{top + height - h}" width="{bar - 2}" height="{h}" '
                         f'fill="{colour}"><title>{escape(label)}, {side}: {value:.2%}</title></rect>')
        parts.append(f'<text transform="translate({x + bar},{top + height + 10}) rotate(35)" font-size="10">'
                     f'{escape(label[:24])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html(status, score, threshold, min_rows, rows, per_feature, reason, subject) -> str:
    title = f"Feature drift{f' of {subject}' if subject else ''}: live inputs against the reference data"
    head = (f"<p class=\"{status}\"><strong>{escape(status.upper())}</strong>: {escape(reason)}.</p>"
            f"<p>Gate: the largest per-feature PSI must be at most {threshold:g}. Rows: reference "
            f"{rows['reference']}, live {rows['live']} (at least {min_rows} each). Numeric features: 10 bins at the "
            "reference's deciles; categorical: the reference's categories. Second opinion, which does not decide "
            "the gate: Kolmogorov–Smirnov (numeric), chi-square (categorical).</p>")
    body = [head]
    if per_feature:
        ordered = sorted(per_feature.values(), key=lambda f: (-f.score, f.name))
        body.append("<table><tr><th>feature</th><th>kind</th><th>PSI</th><th>drifted</th><th>test</th>"
                    "<th>statistic</th><th>p-value</th></tr>")
        for f in ordered:
            body.append(f"<tr><td><a href=\"#f-{escape(f.name)}\">{escape(f.name)}</a></td><td>{f.kind}</td>"
                        f"<td class=\"n\">{_number(f.score)}</td>"
                        f"<td class=\"{'fail' if f.drifted else 'pass'}\">{'yes' if f.drifted else 'no'}</td>"
                        f"<td>{f.test}</td><td class=\"n\">{_number(f.statistic)}</td>"
                        f"<td class=\"n\">{'–' if f.p_value is None else f'{f.p_value:.3g}'}</td></tr>")
        body.append("</table>")
        body.append(f'<p class="key"><span style="background:{REF_COLOUR}"></span>reference'
                    f'<span style="background:{LIVE_COLOUR}"></span>live</p>')
        for f in ordered:
            unseen = (f"<p>Live categories the reference never had: {escape(', '.join(f.unseen))}</p>"
                      if f.unseen else "")
            body.append(f"<section id=\"f-{escape(f.name)}\"><h2>{escape(f.name)} — PSI {_number(f.score)} "
                        f"({f.kind}: {escape(BINNING[f.kind])})</h2>{unseen}{_bars(f)}</section>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{''.join(body)}</body></html>\n")
