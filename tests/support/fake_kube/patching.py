"""PATCH bodies: JSON merge patch, JSON patch, and strategic merge patch (merge + lists merged by name)."""

from __future__ import annotations

import copy

from .errors import ApiError

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
KINDS = (MERGE, JSON_PATCH, STRATEGIC)


def apply(obj: dict, patch, content_type: str) -> dict:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == JSON_PATCH:
        if not isinstance(patch, list):
            raise ApiError.bad_request("json patch must be a list of operations")
        return json_patch(obj, patch)
    if kind in (MERGE, STRATEGIC):
        if not isinstance(patch, dict):
            raise ApiError.bad_request(f"{kind} must be a JSON object")
        return merge(obj, patch, strategic=kind == STRATEGIC)
    raise ApiError(415, "UnsupportedMediaType",
                   f"the body of the request was in an unknown format - accepted media types include: {', '.join(KINDS)}")


def merge(target, patch, strategic: bool = False):
    """RFC 7386; strategic: lists of named dicts merge item by item (`$patch: delete` removes one)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue  # $setElementOrder, $retainKeys: ordering hints the fake does not need
        if value is None:
            result.pop(key, None)
        elif strategic and _named_list(value) and _named_list(result.get(key)):
            result[key] = _merge_named(result[key], value)
        else:
            result[key] = merge(result.get(key), value, strategic)
    return result


def _named_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value)


def _merge_named(current: list, patch: list) -> list:
    items = {item["name"]: item for item in current}
    order = [item["name"] for item in current]
    for item in patch:
        name = item["name"]
        if item.get("$patch") == "delete":
            items.pop(name, None)
            continue
        if name not in items:
            order.append(name)
        items[name] = merge(items.get(name, {}), item, strategic=True)
    return [items[n] for n in order if n in items]


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"json patch path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc, parts: list[str], path: str):
    node = doc
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"json patch: path {path!r} does not exist") from None
    return node


def json_patch(obj: dict, ops: list) -> dict:
    doc = copy.deepcopy(obj)
    for op in ops:
        name, path = op.get("op"), op.get("path", "")
        parts = _pointer(path)
        if name in ("move", "copy"):
            from_parts = _pointer(op["from"])
            value = copy.deepcopy(_get(doc, from_parts, op["from"]))
            if name == "move":
                _remove(doc, from_parts, op["from"])
            _add(doc, parts, value, path)
        elif name == "add":
            _add(doc, parts, copy.deepcopy(op["value"]), path)
        elif name == "remove":
            _remove(doc, parts, path)
        elif name == "replace":
            _remove(doc, parts, path)
            _add(doc, parts, copy.deepcopy(op["value"]), path)
        elif name == "test":
            if _get(doc, parts, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"json patch: test failed at {path!r}")
        else:
            raise ApiError(422, "Invalid", f"json patch: unknown op {name!r}; allowed: add, remove, replace, move, copy, test")
    return doc


def _get(doc, parts, path):
    node = _parent(doc, parts, path)
    try:
        return node[int(parts[-1])] if isinstance(node, list) else node[parts[-1]]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiError(422, "Invalid", f"json patch: path {path!r} does not exist") from None


def _add(doc, parts, value, path):
    if not parts:
        raise ApiError(422, "Invalid", "json patch: cannot replace the whole object")
    node = _parent(doc, parts, path)
    if isinstance(node, list):
        index = len(node) if parts[-1] == "-" else int(parts[-1])
        node.insert(index, value)
    elif isinstance(node, dict):
        node[parts[-1]] = value
    else:
        raise ApiError(422, "Invalid", f"json patch: path {path!r} does not exist")


def _remove(doc, parts, path):
    node = _parent(doc, parts, path)
    try:
        del node[int(parts[-1]) if isinstance(node, list) else parts[-1]]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiError(422, "Invalid", f"json patch: path {path!r} does not exist") from None
