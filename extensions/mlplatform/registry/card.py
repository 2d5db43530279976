"""The model card: markdown rendered from plain facts about a model version (no MLflow here).

`facts` is what `facts.version_facts` collects: model, version, source, params, metrics, signature,
datasets, run (lineage); `report` is the gate report of the promotion, whose model card fields and
results the card repeats.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


def render_card(facts: Mapping, report: Mapping, *, promoted_by: str, promoted_at: str,
                previous_version: str | None) -> str:
    """The markdown card of a version promoted to `report['alias']`."""
    alias = report["alias"]
    previous = f"version {previous_version}" if previous_version else "none (first promotion)"
    sections = [
        f"# Model card: {facts['model']} version {facts['version']}",
        f"Promoted to `@{alias}` by {promoted_by} at {promoted_at}. Previous `@{alias}`: {previous}.",
        "## Details\n\n" + _table(("field", "value"), _card_fields(report)),
        "## Lineage\n\n" + _lineage(facts),
        "## Training data\n\n" + _datasets(facts.get("datasets") or []),
        "## Signature\n\n" + _signature(facts.get("signature"), facts.get("signature_problem")),
        "## Parameters\n\n" + _key_values(facts.get("params") or {}, "No parameters were logged."),
        "## Metrics\n\n" + _key_values(facts.get("metrics") or {}, "No metrics were logged."),
        "## Quality gates\n\n" + _table(("gate", "result", "detail"),
                                        [(g["id"], "pass" if g["passed"] else "FAIL", g["message"])
                                         for g in report["gates"]], empty="The policy has no gates."),
    ]
    return "\n\n".join(sections) + "\n"


def _cell(value) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows, empty: str = "None.") -> str:
    rows = list(rows)
    if not rows:
        return empty
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _key_values(values: Mapping, empty: str) -> str:
    return _table(("name", "value"), sorted(values.items()), empty=empty)


def _card_fields(report: Mapping) -> list[tuple[str, str]]:
    return [(g["field"], g["value"] if g["value"] is not None else "(missing)")
            for g in report["gates"] if g["kind"] == "model_card_field"]


def _lineage(facts: Mapping) -> str:
    lines = [f"- Registered model: `{facts['model']}` version {facts['version']} "
             f"(`models:/{facts['model']}/{facts['version']}`)",
             f"- Model source: `{facts.get('source') or 'unknown'}`"]
    run = facts.get("run")
    if run:
        name = f"{run['run_name']} " if run.get("run_name") else ""
        link = f" — {run['url']}" if run.get("url") else ""
        lines.append(f"- Run: {name}`{run['run_id']}` ({run.get('status') or 'unknown status'}, "
                     f"started {run.get('start_time') or 'unknown'} by {run.get('user') or 'unknown'}){link}")
        lines.append(f"- Experiment: {run.get('experiment_name') or 'unknown'} (id {run.get('experiment_id')})")
    else:
        lines.append("- Run: none (the version was registered without a run)")
    return "\n".join(lines)


def _datasets(datasets: list[Mapping]) -> str:
    return _table(("name", "context", "digest", "source type", "source"),
                  [(d.get("name"), d.get("context") or "", d.get("digest"), d.get("source_type"), d.get("source") or "")
                   for d in datasets],
                  empty="No dataset inputs were logged with the run (`mlflow.log_input`).")


def spec_type(spec: Mapping) -> str:
    """`double`, `tensor float64 (-1, 2)`, or the JSON of a nested type (array, object, map)."""
    if spec.get("type") == "tensor":
        tensor = spec.get("tensor-spec") or {}
        shape = ", ".join(str(d) for d in tensor.get("shape") or [])
        return f"tensor {tensor.get('dtype')} ({shape})"
    if spec.get("type") in ("array", "object", "map"):
        return json.dumps({k: v for k, v in spec.items() if k not in ("name", "required")}, sort_keys=True)
    return str(spec.get("type"))


def _specs(specs: list[Mapping]) -> str:
    return _table(("name", "type", "required"),
                  [(s.get("name") or "-", spec_type(s), "yes" if s.get("required", True) else "no") for s in specs],
                  empty="None.")


def _signature(signature: Mapping | None, problem: str | None) -> str:
    if not signature:
        return f"No signature. {problem}" if problem else "No signature."
    parts = [f"### Inputs\n\n{_specs(signature.get('inputs') or [])}",
             f"### Outputs\n\n{_specs(signature.get('outputs') or [])}"]
    if signature.get("params"):
        parts.append("### Parameters\n\n" + _table(
            ("name", "type", "default"),
            [(p.get("name"), p.get("type"), json.dumps(p.get("default"))) for p in signature["params"]]))
    return "\n\n".join(parts)
