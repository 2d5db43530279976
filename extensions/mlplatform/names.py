"""Kubernetes naming rules the golden paths share (no Kubernetes client import: spec builders use them)."""

from __future__ import annotations

import re

# An application or job name: a DNS label starting with a letter (it becomes object and service names).
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(text: str) -> str:
    """`text` made a valid label value (at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends).
    Lossy for unusual usernames: keep the exact value in an annotation where it matters."""
    return _LABEL_VALUE_INVALID.sub("-", text)[:63].strip("-_.")
