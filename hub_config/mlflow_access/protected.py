"""Protected aliases (the catalog's `promotion.alias` and `promotion.protected_aliases`): only the
platform identity moves them, through the platform service's gates; MLflow refuses everyone else.

Checked by the authorization function (server.py) before MLflow's own permission checks, for every
caller but MLflow's admin (the platform identity). Refused, on any of MLflow's REST prefixes:
- setting or deleting a protected alias;
- deleting a model version a protected alias points to, or a registered model that holds one;
- renaming a registered model that holds one (the platform's record names the model);
- setting or deleting a tag of the platform's (`mlplatform.*`) on a registered model or version, or
  creating one with such a tag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

ALIAS = "/mlflow/registered-models/alias"
DELETE_VERSION = "/mlflow/model-versions/delete"
DELETE_MODEL = "/mlflow/registered-models/delete"
RENAME_MODEL = "/mlflow/registered-models/rename"
TAG_PATHS = ("/mlflow/registered-models/set-tag", "/mlflow/registered-models/delete-tag",
             "/mlflow/model-versions/set-tag", "/mlflow/model-versions/delete-tag")
CREATE_PATHS = ("/mlflow/registered-models/create", "/mlflow/model-versions/create")
PLATFORM_TAG_PREFIX = "mlplatform."
HOW = "promote or roll back through the platform (the PromoteModel widget, the REST API or mlplatform.registry)"


def refusal(method: str, path: str, params: Mapping, protected: list[str],
            aliases_of: Callable[[str], dict[str, str]]) -> str | None:
    """Why MLflow must refuse this request, or None. `params` are the request's parameters (JSON body or
    query); `aliases_of(name)` reads a registered model's aliases (alias → version; {} if none)."""
    name = params.get("name")
    if path.endswith(ALIAS) and method in ("POST", "DELETE"):
        alias = params.get("alias")
        if alias in protected:
            return f"@{alias} is a protected alias: only the platform moves it; {HOW}"
        return None
    if path.endswith(TAG_PATHS) and method in ("POST", "DELETE"):
        key = params.get("key")
        if isinstance(key, str) and key.startswith(PLATFORM_TAG_PREFIX):
            return f"tag {key!r}: tags under {PLATFORM_TAG_PREFIX!r} are the platform's own"
        return None
    if path.endswith(CREATE_PATHS) and method == "POST":
        tags = params.get("tags")
        keys = [t.get("key") for t in tags if isinstance(t, dict)] if isinstance(tags, list) else []
        ours = [k for k in keys if isinstance(k, str) and k.startswith(PLATFORM_TAG_PREFIX)]
        if ours:
            return f"tag {ours[0]!r}: tags under {PLATFORM_TAG_PREFIX!r} are the platform's own"
        return None
    if not protected or not isinstance(name, str):
        return None
    if path.endswith(DELETE_VERSION) and method == "DELETE":
        held = sorted(a for a, v in aliases_of(name).items() if a in protected and str(v) == str(params.get("version")))
        if held:
            return (f"version {params.get('version')} of {name!r} holds {', '.join('@' + a for a in held)}: a version "
                    f"a protected alias points to cannot be deleted; {HOW} to another version first")
    elif path.endswith((DELETE_MODEL, RENAME_MODEL)) and method in ("DELETE", "POST"):
        held = sorted(a for a in aliases_of(name) if a in protected)
        if held:
            what = "deleted" if path.endswith(DELETE_MODEL) else "renamed"
            return f"{name!r} holds {', '.join('@' + a for a in held)}: a model with a protected alias cannot be {what}"
    return None
