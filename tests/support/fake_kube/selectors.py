"""labelSelector and fieldSelector, parsed as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import ApiError

_FIELD = re.compile(r"^\s*([A-Za-z0-9._]+)\s*(==|=|!=)\s*(.*?)\s*$")
_SET = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\)|(==|=|!=)\s*([A-Za-z0-9._-]*))?\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b=c`)."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def labels(selector: str | None) -> Callable[[dict], bool]:
    """A predicate on an object's metadata.labels; 400 for a selector the API server would refuse."""
    tests = []
    for term in _split(selector or ""):
        match = _SET.match(term)
        if not match:
            raise ApiError.bad_request(f"unable to parse requirement: invalid label selector: {term!r}")
        negate, key, set_op, values, op, value = match.groups()
        if negate and (set_op or op):
            raise ApiError.bad_request(f"unable to parse requirement: {term!r}")
        if set_op:
            allowed = {v.strip() for v in values.split(",") if v.strip()}
            if set_op == "in":
                tests.append(lambda ls, k=key, a=allowed: ls.get(k) in a)
            else:
                tests.append(lambda ls, k=key, a=allowed: ls.get(k) not in a)
        elif op in ("=", "=="):
            tests.append(lambda ls, k=key, v=value: ls.get(k) == v)
        elif op == "!=":
            tests.append(lambda ls, k=key, v=value: ls.get(k) != v)
        elif negate:
            tests.append(lambda ls, k=key: k not in ls)
        else:
            tests.append(lambda ls, k=key: k in ls)
    return lambda obj: all(t(obj.get("metadata", {}).get("labels") or {}) for t in tests)


def _field(obj: dict, path: str):
    value = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def required_name(selector: str | None) -> str | None:
    """The name a fieldSelector requires exactly (`metadata.name=x`, also among other terms), as the API server's
    RequestInfo takes it for a list or watch (k8s.io/apiserver requestinfo.go, fields.Selector.RequiresExactMatch):
    RBAC's resourceNames then admit the request. None for `!=`, no such term, a selector that does not parse, or a
    name that is no path segment (`.`, `..`, one with `/` or `%`)."""
    name = None
    for term in _split(selector or ""):
        match = _FIELD.match(term)
        if not match:
            return None  # the real server leaves the name empty when the query does not parse
        path, op, value = match.groups()
        if path == "metadata.name" and op != "!=" and name is None:
            name = value  # the first exact term, as RequiresExactMatch returns it
    if not name or name in (".", "..") or "/" in name or "%" in name:
        return None
    return name


def fields(selector: str | None) -> Callable[[dict], bool]:
    """A predicate on dotted field paths (`metadata.name=x`, `involvedObject.kind=Pod`, `status.phase!=Failed`).

    The real server allows only a few fields per kind; the fake allows any path, compared as text.
    """
    tests = []
    for term in _split(selector or ""):
        match = _FIELD.match(term)
        if not match:
            raise ApiError.bad_request(f"invalid field selector: {term!r}")
        path, op, value = match.groups()
        equal = op != "!="
        tests.append(lambda obj, p=path, v=value, eq=equal: (str(_field(obj, p) or "") == v) == eq)
    return lambda obj: all(t(obj) for t in tests)
