"""What the API server refuses with 422: schema (strict, unknown fields included), names, labels."""

from __future__ import annotations

import re

import jsonschema
import kubernetes_validate

from .. import crd
from .errors import ApiError
from .resources import Resource

KUBERNETES_VERSION = "1.33"
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Names the API server checks more strictly than as a DNS subdomain.
_NAMES = {"namespaces": (_LABEL, "RFC 1123 label", 63), "services": (_DNS1035, "RFC 1035 label", 63)}
_RULE = "alphanumeric characters, '-', '_' or '.', at most 63 characters"
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def _causes(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    where = _path(error.absolute_path)
    join = (lambda name: f"{where}.{name}" if where else name)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        return [(join(k), f'unknown field "{join(k)}"') for k in error.instance if k not in known]
    if error.validator == "required":
        missing = re.match(r"'([^']+)' is a required property", error.message)
        return [(join(missing.group(1)) if missing else where, "Required value")]
    if error.validator == "enum":
        allowed = ", ".join(f'"{v}"' for v in error.validator_value)
        return [(where, f'Unsupported value: "{error.instance}": supported values: {allowed}')]
    return [(where or "<root>", f"Invalid value: {error.instance!r}: {error.message}")]


def _name_causes(resource: Resource, obj: dict) -> list[tuple[str, str]]:
    meta = obj.get("metadata", {})
    name = meta.get("name", "")
    causes = []
    pattern, what, limit = _NAMES.get(resource.plural, (_SUBDOMAIN, "RFC 1123 subdomain", 253))
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > limit or not pattern.match(name):
        rule = f"lower case alphanumeric characters, '-' (and '.' for a subdomain), at most {limit} characters"
        causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase {what} must consist of {rule}'))
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, short = key.rpartition("/")
        if not _QUALIFIED.match(short) or len(short) > 63 or (prefix and not _SUBDOMAIN.match(prefix)):
            causes.append(("metadata.labels", f'Invalid value: "{key}": a qualified name must consist of {_RULE}'))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            why = f'Invalid value: "{value}": a valid label must be an empty string or consist of {_RULE}'
            causes.append(("metadata.labels", why))
    return causes


def validate(resource: Resource, obj: dict) -> None:
    """Raise a 422 ApiError naming the field, as the API server with fieldValidation=Strict."""
    causes = _name_causes(resource, obj)
    if resource.custom:
        causes += [c for e in crd.validator(resource.group, resource.kind, resource.version).iter_errors(obj)
                   for c in _causes(e)]
    else:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            causes += _causes(error)
    if causes:
        raise ApiError.invalid(resource, obj.get("metadata", {}).get("name", ""), causes)
