"""Checks of rendered output: core objects against the Kubernetes schemas (kubernetes-validate, strict),
chart values against the chart's own schema after merging them onto its defaults, as helm does."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33"


def object_problems(source: str, obj: dict[str, Any]) -> list[str]:
    """Problems of one core object; `source` is the catalog key it was rendered from."""
    meta = obj.get("metadata", {})
    what = f"{obj.get('kind')} {'/'.join(filter(None, (meta.get('namespace'), meta.get('name'))))}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        at = ".".join(map(str, e.absolute_path)) or "<root>"
        return [f"{source}: renders {what}, which Kubernetes {KUBERNETES_VERSION} refuses at {at}: {e.message}"]
    return []


def helm_merge(defaults: Any, overrides: Any) -> Any:
    """Helm's coalescing of values: maps merge key by key, anything else replaces, null deletes."""
    if not (isinstance(defaults, dict) and isinstance(overrides, dict)):
        return copy.deepcopy(overrides)
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(merged.get(key), value)
    return merged


def load_chart(chart_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values.yaml, values.schema.yaml) of an unpacked chart (`helm pull jupyterhub/jupyterhub --untar`)."""
    chart_dir = Path(chart_dir)
    return (yaml.safe_load((chart_dir / "values.yaml").read_text()),
            yaml.safe_load((chart_dir / "values.schema.yaml").read_text()))


def values_problems(source: str, values: dict[str, Any], chart_values: dict[str, Any],
                    schema: dict[str, Any]) -> list[str]:
    merged = helm_merge(chart_values, values)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{source}: the chart's schema refuses {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.absolute_path)))]
