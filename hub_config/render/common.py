"""What several renderers share: labels, the catalog as the cluster reads it, mount paths."""

from __future__ import annotations

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


def labels(**extra: str) -> dict[str, str]:
    return {**MANAGED_BY, **extra}


def catalog_document(catalog: Catalog) -> str:
    """The validated catalog as YAML, `${VAR}` references already expanded, defaults spelled out.

    The hub and the notebooks read this copy, so what runs is what was rendered and checked, not what
    the environment of a pod would make of the engineer's file.
    """
    data = catalog.model_dump(mode="json", exclude_none=True)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
    return "# The platform catalog as rendered by `mlplatform render` (environment references expanded).\n" + body
