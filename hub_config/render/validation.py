"""Checks of rendered output: core objects against the Kubernetes schemas (kubernetes-validate, strict),
a release's values against the chart's own schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate

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


def values_problems(source: str, merged: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Problems of a release's values (ours merged onto the chart's, by helm) under the chart's schema."""
    validator = jsonschema.Draft7Validator(schema)
    return [f"{source}: the chart's schema refuses {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.absolute_path)))]
