"""The environment contract of one server, as the hub writes it (the contract: mlplatform_core.contract)."""

from __future__ import annotations

from mlplatform_core.catalog import Catalog
from mlplatform_core.contract import PlatformEnvironment

from .profiles import Selection


def notebook_environment(catalog: Catalog, username: str, selection: Selection, *, hub_api_url: str,
                         aws_config_file: str, server_name: str = "", catalog_path: str | None = None,
                         service_url: str = "") -> dict[str, str]:
    """The contract for one server. `aws_config_file` and `catalog_path` are where the server finds
    those files (default for the catalog: the hub's own path); `hub_api_url` is the hub API as the
    server reaches it; `service_url` the platform service's."""
    return PlatformEnvironment.for_server(
        catalog, user=username, team=selection.team, profile=selection.profile, gpu_type=selection.gpu_type,
        gpu_count=selection.gpu_count, aws_config_file=aws_config_file, hub_api_url=hub_api_url,
        server_name=server_name, catalog_path=catalog_path, service_url=service_url).to_environ()
