"""What several renderers share: labels, the catalog as the cluster reads it, mount paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from mlplatform_core.catalog import Catalog
from mlplatform_core.names import CATALOG_FILE, CONFIG_DIR, MANAGED_BY_LABEL

MANAGED_BY = {MANAGED_BY_LABEL: "mlplatform", "app.kubernetes.io/part-of": "mlplatform"}
# Where the hub finds the catalog (MLPLATFORM_CATALOG of the environment contract); notebooks mount
# their team's ConfigMap at the same place.
CATALOG_PATH = f"{CONFIG_DIR}/{CATALOG_FILE}"
# z2jh names its objects without a release prefix (fullnameOverride: "" in the chart's values.yaml).
HUB_SERVICE_ACCOUNT = "hub"
HUB_SERVICE = "hub"
HUB_API_PORT = 8081
# The hub pod's variables from keys of the Secret HUB_SECRET (jupyterhub.py, `hub.extraEnv`). The catalog may
# refer to them (`${MLPLATFORM_DB_PASSWORD}` in platform_service.database_url): render leaves such a reference
# as it is, so the secret never reaches the values, and the hub expands it when it loads its catalog.
HUB_SECRET_VARIABLES = {"MLPLATFORM_DB_PASSWORD": "service-database-password"}


def labels(**extra: str) -> dict[str, str]:
    return {**MANAGED_BY, **extra}


def render_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """What `mlplatform render` expands the catalog's `${VAR}` references with: the engineer's environment,
    but each of HUB_SECRET_VARIABLES stands for itself (set or not here, it stays a reference)."""
    return {**environ, **{name: f"${{{name}}}" for name in HUB_SECRET_VARIABLES}}


def hub_secret_references(catalog: Catalog) -> list[str]:
    """The HUB_SECRET_VARIABLES the (render_environ-expanded) catalog refers to: the hub pod needs them set."""
    document = catalog_document(catalog)
    return [name for name in HUB_SECRET_VARIABLES if f"${{{name}}}" in document]


def catalog_document(catalog: Catalog, *, for_notebooks: bool = False) -> str:
    """The validated catalog as YAML, `${VAR}` references already expanded, defaults spelled out.

    The hub and the notebooks read this copy, so what runs is what was rendered and checked, not what
    the environment of a pod would make of the engineer's file. Only references to HUB_SECRET_VARIABLES
    remain, for the hub pod to expand; `for_notebooks` (the team ConfigMaps) drops them (an empty string in
    their place): notebooks never connect to the platform's database and have no such variable.
    """
    data = catalog.model_dump(mode="json", exclude_none=True)
    if for_notebooks:
        data = _without_references(data, [f"${{{name}}}" for name in HUB_SECRET_VARIABLES])
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
    return "# The platform catalog as rendered by `mlplatform render` (environment references expanded).\n" + body


def _without_references(value: Any, references: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without_references(v, references) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_references(v, references) for v in value]
    if isinstance(value, str):
        for reference in references:
            value = value.replace(reference, "")
    return value
