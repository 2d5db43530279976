"""Quality gates, evaluated on plain values: no MLflow here, so every rule is tested without a server.

A report is JSON-serializable:

    {"model": "iris", "version": "3", "alias": "champion", "champion_version": "2",
     "passed": False, "failed": ["accuracy >= 0.92"],
     "gates": [{"id": "accuracy >= 0.92", "kind": "metric", "passed": False,
                "message": "accuracy is 0.9, needs >= 0.92", "metric": "accuracy", "op": ">=",
                "threshold": 0.92, "value": 0.9}, ...]}

Gate kinds, in this order: `metric` (one per metric gate of the policy), `champion` (one per gated
metric and direction, when `compare_with_champion`), `signature` (when `require_signature`),
`model_card_field` (one per field of `model_card_fields`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping

from mlplatform_core.catalog import Promotion

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def evaluate_gates(policy: Promotion, *, model: str, version: str, metrics: Mapping[str, float],
                   signature: Mapping | None, version_tags: Mapping[str, str], model_tags: Mapping[str, str],
                   champion: Mapping | None = None, signature_problem: str | None = None) -> dict:
    """Every gate of `policy` for one model version.

    `metrics` are the version's run metrics; `signature` its MLmodel signature (`{"inputs": [...],
    "outputs": [...]}`) or None, with `signature_problem` saying why it could not be read;
    `champion` is `{"version": ..., "metrics": {...}}` of the current alias holder, or None.
    """
    gates = [_metric_gate(g.metric, g.op, g.threshold, metrics) for g in policy.metric_gates]
    if policy.compare_with_champion:
        directions = dict.fromkeys((g.metric, g.op[0]) for g in policy.metric_gates)
        gates += [_champion_gate(metric, sign, metrics, champion, policy.alias, version)
                  for metric, sign in directions]
    if policy.require_signature:
        gates.append(_signature_gate(signature, signature_problem))
    gates += [_card_field_gate(field, version_tags, model_tags, model, str(version))
              for field in policy.model_card_fields]
    failed = [g["id"] for g in gates if not g["passed"]]
    return {"model": model, "version": str(version), "alias": policy.alias,
            "champion_version": champion["version"] if champion else None,
            "passed": not failed, "failed": failed, "gates": gates}


def _number(value) -> float | None:
    """A metric value usable in a comparison; None for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _missing(metric: str, metrics: Mapping[str, float]) -> str:
    if metric in metrics:
        return f"{metric} is NaN"
    logged = ", ".join(sorted(metrics)) or "none"
    return f"{metric} was not logged by the version's run; metrics logged: {logged}"


def _metric_gate(metric: str, op: str, threshold: float, metrics: Mapping[str, float]) -> dict:
    value = _number(metrics.get(metric))
    passed = value is not None and _OPS[op](value, threshold)
    message = _missing(metric, metrics) if value is None else f"{metric} is {_fmt(value)}, needs {op} {_fmt(threshold)}"
    return {"id": f"{metric} {op} {_fmt(threshold)}", "kind": "metric", "passed": passed, "message": message,
            "metric": metric, "op": op, "threshold": threshold, "value": value}


def _champion_gate(metric: str, sign: str, metrics: Mapping[str, float], champion: Mapping | None,
                   alias: str, version: str) -> dict:
    """No worse than the champion: `sign` '>' means higher is better, '<' lower is better; ties pass."""
    value = _number(metrics.get(metric))
    champion_version = champion["version"] if champion else None
    champion_value = _number(champion["metrics"].get(metric)) if champion else None
    better = "higher" if sign == ">" else "lower"
    gate = {"id": f"{metric} no worse than @{alias}", "kind": "champion", "metric": metric,
            "better": better, "value": value, "champion_version": champion_version, "champion_value": champion_value}
    if value is None:
        return {**gate, "passed": False, "message": _missing(metric, metrics)}
    if champion is None:
        return {**gate, "passed": True, "message": f"no version holds @{alias} yet: nothing to compare with"}
    if str(champion_version) == str(version):
        return {**gate, "passed": True, "message": f"version {version} holds @{alias} already"}
    if champion_value is None:
        return {**gate, "passed": True,
                "message": f"@{alias} (version {champion_version}) has no {metric} value: nothing to compare with"}
    passed = value >= champion_value if sign == ">" else value <= champion_value
    verdict = "no worse than" if passed else "worse than"
    return {**gate, "passed": passed,
            "message": f"{metric} {_fmt(value)} is {verdict} {_fmt(champion_value)} of @{alias} "
                       f"(version {champion_version}; {better} is better)"}


def _signature_gate(signature: Mapping | None, problem: str | None) -> dict:
    inputs = list((signature or {}).get("inputs") or [])
    outputs = list((signature or {}).get("outputs") or [])
    passed = bool(inputs)
    if passed:
        message = f"signature with {len(inputs)} inputs and {len(outputs)} outputs"
    else:
        message = problem or "the model was logged without a signature; log it with signature=infer_signature(X, y)"
    return {"id": "signature present", "kind": "signature", "passed": passed, "message": message,
            "value": {"inputs": len(inputs), "outputs": len(outputs)} if signature else None}


def _card_field_gate(field: str, version_tags: Mapping[str, str], model_tags: Mapping[str, str], model: str,
                     version: str) -> dict:
    for source, tags in (("version", version_tags), ("registered model", model_tags)):
        value = (tags.get(field) or "").strip()
        if value:
            return {"id": f"model card: {field}", "kind": "model_card_field", "passed": True,
                    "message": f"{field} is set on the {source}", "field": field, "value": value, "source": source}
    return {"id": f"model card: {field}", "kind": "model_card_field", "passed": False,
            "message": f"tag {field!r} is missing; set it on the version with {set_tag_code(model, version, field)} "
                       "(or on the registered model with set_registered_model_tag)",
            "field": field, "value": None, "source": None}


def set_tag_code(model: str, version: str, field: str) -> str:
    """The one line a user runs in the notebook to set a missing model-card tag on the version: the message
    shows it filled in, because "tag is missing" alone left users looking up MLflow's API."""
    return f'MlflowClient().set_model_version_tag({model!r}, {version!r}, {field!r}, "...")'


def summary(report: Mapping) -> str:
    """One line per gate, for logs and the notebook: `PASS accuracy >= 0.92: accuracy is 0.95, needs >= 0.92`."""
    return "\n".join(f"{'PASS' if g['passed'] else 'FAIL'} {g['id']}: {g['message']}" for g in report["gates"])
