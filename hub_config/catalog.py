"""Which catalog the hub reads: $MLPLATFORM_CATALOG, else the local platform's bundled platform.yaml.

The catalog itself (schema, validation, cache) lives in the shared core, `mlplatform_core.catalog`.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlplatform_core.contract import variable

DEFAULT_CATALOG = Path(__file__).parent / "platform.yaml"


def configured_catalog_path() -> str:
    """$MLPLATFORM_CATALOG, else the catalog bundled for the local platform (the default of every setting)."""
    return os.environ.get(variable("catalog_path")) or str(DEFAULT_CATALOG)
