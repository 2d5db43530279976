"""The environment contract, read on the notebook side (defined in mlplatform_core.contract; the hub writes it)."""

from __future__ import annotations

from collections.abc import Mapping

from mlplatform_core.contract import NotOnPlatformError, PlatformEnvironment, current

__all__ = ["NotOnPlatformError", "PlatformEnvironment", "current", "read_environment"]


def read_environment(environ: Mapping[str, str] | None = None) -> PlatformEnvironment:
    """The contract in `environ` (default: this process's). Outside a server of the platform (a
    script, a test) nothing is required: the local backend, no team."""
    return PlatformEnvironment.from_environ(environ, required=())
