"""The local platform's catalog in direct mode: hub_config/platform.yaml sets `gitops` (the local platform records
every deploy as a commit), so a Kubernetes backend made from it needs the platform service; tests of the direct
path (the notebook applies objects itself) use this copy without the `gitops` section."""

from __future__ import annotations

import atexit
import functools
import os
import tempfile
from pathlib import Path

import yaml

from hub_config.catalog import DEFAULT_CATALOG


def direct_mode_data() -> dict:
    """The local catalog's data without `gitops`."""
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data.pop("gitops")
    return data


@functools.cache
def direct_mode_catalog() -> Path:
    """A file holding direct_mode_data() (one per test process, removed when it exits)."""
    fd, name = tempfile.mkstemp(prefix="mlplatform-direct-", suffix=".yaml")
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(direct_mode_data(), out)
    atexit.register(os.unlink, name)
    return Path(name)
