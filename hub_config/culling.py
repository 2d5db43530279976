"""Idle culling: the hub stops a server nobody has used for its profile's timeout (catalog `culling`).

What is enforced where
----------------------
One `jupyterhub-idle-culler` runs as a hub-managed service (a process of the hub, outside every
user's server, with its own API token) and stops idle servers through the hub's API. The user's server
runs the user's code, so nothing inside it decides: a server cannot lengthen its own timeout.

The culler has one `--timeout`; per-profile timeouts come from its `cull_arbiter_hook`, which it calls
for every ready server with the server's model. Our hook (`profile_arbiter`, loaded by the culler's
config file `idle_culler_config.py`) reads the profile the spawner applied from the server's *state*
(`state.selection.profile`, written by the hub from `CatalogProfilesMixin.get_state`; the user cannot
change it, unlike `user_options`, which also leave the default profile implicit) and compares the
idle time with that profile's `catalog.idle_timeout(profile)`. The table profile → seconds is handed
to the culler in its environment (`IDLE_TIMEOUTS`) by the hub, which has validated the catalog: the
culler reads no catalog. A server whose profile is not in the table (a profile removed from the
catalog since it started, or no state) gets `--timeout`, the shortest timeout of the catalog.

Other designs and why not: JupyterHub's scope filters (`!user=`, `!group=`, `!server=`) cannot say
"servers of profile X", so one culler per timeout with a role limited to its servers is not
expressible; jupyter-server's own `shutdown_no_activity_timeout` runs inside the user's server and is
advice only (not set here: the hub's culler already applies the profile's timeout).

The culler's role: `list:users`, `read:users:activity`, `read:servers`, `delete:servers` (stop, not
remove, servers; never `admin:users`: users are not culled) and `admin:server_state`, only so that the
server models it reads carry `state` (JupyterHub 6 has no API that writes server state).

Idle means no activity the hub has seen: traffic through the proxy and the activity the server
reports (a kernel busy computing counts). A user who keeps generating activity keeps the server;
quota and budgets bound that, not the culler.

Where it runs: the local platform appends the service and its role to the hub's config
(`configure_culling`, from jupyterhub_config.py). On Kubernetes the chart's own culler runs
(z2jh `cull` values, `chart_cull_values`), and `hub.extraConfig` gives it the config file and the
table (`extend_chart_culler`); the `admin:server_state` role comes from `hub.loadRoles` (`state_role`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlplatform_core.catalog import Catalog

CULLER = "jupyterhub-idle-culler"  # the service's name, here as in the z2jh chart
CONFIG_FILE = Path(__file__).with_name("idle_culler_config.py")
# The culler's environment: {profile: seconds} as JSON.
IDLE_TIMEOUTS = "MLPLATFORM_IDLE_TIMEOUTS"
SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")
STATE_SCOPE = "admin:server_state"  # the server model's `state`: which profile the spawner applied
STATE_ROLE = "mlplatform-idle-culler-state"


def idle_timeouts(catalog: Catalog) -> dict[str, int]:
    """Every profile's idle timeout in seconds (its own, else the catalog's GPU or CPU default)."""
    return {profile: catalog.idle_timeout(profile) for profile in catalog.profiles}


def culler_arguments(catalog: Catalog) -> list[str]:
    """The culler's options besides the interpreter: the shortest timeout as its default, the catalog's interval,
    the config file with the per-profile hook. Servers are stopped, users never removed."""
    return [f"--timeout={min(idle_timeouts(catalog).values())}", f"--cull-every={catalog.culling.every_seconds}",
            "--cull-users=false", f"--config={CONFIG_FILE}"]


def culler_service(catalog: Catalog, python: str) -> dict[str, Any]:
    """The hub-managed service (an entry of `c.JupyterHub.services`); the hub hands it its API URL and token."""
    return {"name": CULLER, "command": [python, "-m", "jupyterhub_idle_culler", *culler_arguments(catalog)],
            "environment": {IDLE_TIMEOUTS: json.dumps(idle_timeouts(catalog), sort_keys=True)}}


def culler_role() -> dict[str, Any]:
    return {"name": "mlplatform-idle-culler", "scopes": [*SCOPES, STATE_SCOPE], "services": [CULLER]}


def state_role() -> dict[str, Any]:
    """What the chart's culler role lacks: reading servers' state (z2jh `hub.loadRoles`)."""
    return {"name": STATE_ROLE, "scopes": [STATE_SCOPE], "services": [CULLER]}


def configure_culling(c, catalog: Catalog, python: str = sys.executable) -> None:
    """The local platform: append the culler service and its role to the hub's config (nothing when disabled)."""
    if not catalog.culling.enabled:
        return
    role = culler_role()
    c.JupyterHub.services = [*(s for s in c.JupyterHub.get("services", []) if s.get("name") != CULLER),
                             culler_service(catalog, python)]
    c.JupyterHub.load_roles = [*(r for r in c.JupyterHub.get("load_roles", []) if r.get("name") != role["name"]),
                               role]


def chart_cull_values(catalog: Catalog) -> dict[str, Any]:
    """z2jh's `cull` values: the chart's culler at the shortest timeout; per profile: `extend_chart_culler`.

    `adminUsers` only matters when users are culled, which they are not: left at the chart's default."""
    if not catalog.culling.enabled:
        return {"enabled": False}
    return {"enabled": True, "users": False, "adminUsers": True, "removeNamedServers": False, "maxAge": 0,
            "timeout": min(idle_timeouts(catalog).values()), "every": catalog.culling.every_seconds}


def extend_chart_culler(c, catalog: Catalog) -> None:
    """z2jh's `hub.extraConfig` (after the chart's config built its culler service): add the per-profile hook."""
    services = [s for s in c.JupyterHub.services if s.get("name") == CULLER]
    if catalog.culling.enabled and not services:
        raise RuntimeError(f"The catalog {catalog.path} enables culling but the chart started no {CULLER}: "
                           "set the chart's cull.enabled (re-render the values with `mlplatform render`).")
    for service in services:
        service["command"] = [*service["command"], f"--config={CONFIG_FILE}"]
        service["environment"] = {**service.get("environment", {}),
                                  IDLE_TIMEOUTS: json.dumps(idle_timeouts(catalog), sort_keys=True)}


# --- inside the culler (its config file) -----------------------------------------------------------

def profile_of(server: Mapping[str, Any]) -> str | None:
    """The profile the spawner applied, from the server model's `state` (present with `admin:server_state`)."""
    selection = (server.get("state") or {}).get("selection") or {}
    return selection.get("profile")


def profile_arbiter(timeouts: Mapping[str, int]) -> Callable[..., bool]:
    """The culler's `cull_arbiter_hook`: cull once idle for the server's profile's timeout.

    A profile not in `timeouts` (or a server without state) gets the culler's `--timeout` (`inactive_limit`)."""
    def arbiter(*, inactive, inactive_limit, server, **kwargs) -> bool:
        return inactive is not None and inactive.total_seconds() >= timeouts.get(profile_of(server), inactive_limit)
    return arbiter


def arbiter_from_environment(environ: Mapping[str, str]) -> Callable[..., bool]:
    """The hook from the table the hub put in the culler's environment (`IDLE_TIMEOUTS`)."""
    return profile_arbiter({str(k): int(v) for k, v in json.loads(environ.get(IDLE_TIMEOUTS) or "{}").items()})
