"""A Backstage skeleton (nunjucks with `${{ }}`, as fetch:template renders it) made from an object one of the
project's builders returned for stand-in inputs: each stand-in becomes the template expression of its input.

So a skeleton is never a hand-written copy of a manifest: build the object with `Stand-in`s where the template's
values go, and `nunjucks_yaml` writes it out with `${{ <expression> | dump }}` in their place. `dump` is JSON,
and JSON scalars are YAML scalars, so whatever the user types stays one quoted string. Where a builder derives
a number from an input (a worker group's maxReplicas of twice the replicas) the multiple is kept. A string that
holds a YAML document with stand-ins (a RayService's serveConfigV2) becomes a literal block rendered the same way:
the text differs from PyYAML's, the document it holds is the same.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

MAX_MULTIPLE = 8  # an integer that is k × a number stand-in (k ≤ this) is that expression × k


@dataclass(frozen=True)
class StandIn:
    """`value` stands for the template expression `expression` (e.g. 'values.name') in a built object."""

    value: str | int
    expression: str


class SkeletonError(ValueError):
    """A stand-in would be lost or ambiguous in the skeleton."""


def nunjucks_yaml(obj: Any, stand_ins: list[StandIn]) -> str:
    """`obj` as YAML text with each stand-in replaced by its `${{ }}` expression. SkeletonError when a stand-in
    would stay in the text (it sat somewhere the emitter does not template)."""
    text = "\n".join(_Emitter(stand_ins).block(obj, 0)) + "\n"
    left = [s.value for s in stand_ins if str(s.value) in text]
    if left:
        raise SkeletonError(f"stand-ins left in the skeleton: {', '.join(map(repr, left))}")
    return text


class _Emitter:
    def __init__(self, stand_ins: list[StandIn]):
        self.strings = sorted((s for s in stand_ins if isinstance(s.value, str)), key=lambda s: -len(s.value))
        self.numbers = [s for s in stand_ins if isinstance(s.value, int)]
        self.pattern = re.compile("|".join(re.escape(s.value) for s in self.strings)) if self.strings else None
        self.by_text = {s.value: s.expression for s in self.strings}

    # --- scalars ----------------------------------------------------------------------------------
    def expression(self, value: Any) -> str | None:
        """The nunjucks expression of a scalar made of stand-ins; None when it holds none."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            for s in self.numbers:
                if value == s.value:
                    return s.expression
                if value % s.value == 0 and 1 < value // s.value <= MAX_MULTIPLE:
                    return f"{s.expression} * {value // s.value}"
            return None
        if isinstance(value, str):
            if value in self.by_text:
                return self.by_text[value]
            parts, last = [], 0
            for match in self.pattern.finditer(value) if self.pattern else ():
                if match.start() > last:
                    parts.append(json.dumps(value[last:match.start()]))
                parts.append(self.by_text[match.group(0)])
                last = match.end()
            for s in self.numbers:
                if str(s.value) in value:
                    raise SkeletonError(f"{value!r} holds the number stand-in {s.value} inside a string")
            if not parts:
                return None
            if last < len(value):
                parts.append(json.dumps(value[last:]))
            return "(" + " + ".join(parts) + ")"
        return None

    def scalar(self, value: Any) -> str:
        expression = self.expression(value)
        if expression is None:
            return _yaml_scalar(value)
        if isinstance(value, int):
            return "${{ " + expression + " }}"
        return "${{ " + expression + " | dump }}"

    # --- blocks -----------------------------------------------------------------------------------
    def block(self, value: Any, indent: int) -> list[str]:
        pad = " " * indent
        if isinstance(value, dict):
            if not value:
                return [pad + "{}"]
            lines = []
            for key, item in value.items():
                if self.expression(key) is not None:
                    raise SkeletonError(f"the key {key!r} holds a stand-in; only values may")
                lines += self.entry(pad + _yaml_scalar(key) + ":", item, indent + 2)
            return lines
        if isinstance(value, list):
            if not value:
                return [pad + "[]"]
            lines = []
            for item in value:
                inner = self.entry(pad + "-", item, indent + 2)
                if isinstance(item, dict) and item:  # the first key on the dash's line
                    inner = [pad + "- " + inner[1].lstrip()] + inner[2:]
                lines += inner
            return lines
        return [pad + self.scalar(value)]

    def entry(self, head: str, item: Any, indent: int) -> list[str]:
        """`head` (a key's 'k:' or a dash) and its value: inline for scalars, else the block below it."""
        if isinstance(item, str) and "\n" in item:
            return [head + " |" + ("" if item.endswith("\n") else "-")] + self.literal(item, indent)
        if isinstance(item, (dict, list)) and item:
            return [head] + self.block(item, indent)
        return [head + " " + self.block(item, 0)[0]]

    def literal(self, text: str, indent: int) -> list[str]:
        """A multi-line string as a literal block; a YAML document holding stand-ins is templated inside it."""
        pad = " " * indent
        holds = (self.pattern and self.pattern.search(text)) or any(str(s.value) in text for s in self.numbers)
        if holds:
            document = yaml.safe_load(text)
            if not isinstance(document, (dict, list)):
                raise SkeletonError(f"a multi-line string holds a stand-in but is not a YAML document: {text[:60]!r}")
            return [pad + line for line in self.block(document, 0)]
        return [pad + line if line else "" for line in text.rstrip("\n").split("\n")]


def _yaml_scalar(value: Any) -> str:
    """A one-line scalar as PyYAML writes it (quoted only where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()
