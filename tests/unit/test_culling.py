"""Idle culling from the catalog: the local hub's culler service and role, z2jh's `cull` values and the
chart culler's hook, whole; the per-profile hook as jupyterhub-idle-culler itself loads and calls it."""

import copy
import json
import sys
from datetime import timedelta

import pytest
import yaml
from jupyterhub_idle_culler import IdleCuller
from traitlets.config import Config

from mlplatform_core.catalog import parse_catalog
from hub_config.catalog import DEFAULT_CATALOG
from hub_config.culling import (CONFIG_FILE, IDLE_TIMEOUTS, arbiter_from_environment, chart_cull_values,
                                configure_culling, culler_arguments, extend_chart_culler, idle_timeouts,
                                profile_arbiter)
from hub_config.render.jupyterhub import CULLING_CONFIG, jupyterhub_values

BASE = yaml.safe_load(DEFAULT_CATALOG.read_text())
# cpu: the catalog's CPU default; gpu-a100: the GPU default; gpu-t4: its own, longer timeout.
TIMEOUTS = {"cpu": 7200, "gpu-a100": 900, "gpu-t4": 2700}
CULLER_ROLE = {"name": "mlplatform-idle-culler", "services": ["jupyterhub-idle-culler"],
               "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers", "admin:server_state"]}


def catalog(enabled=True):
    data = copy.deepcopy(BASE)
    data["culling"] = {"enabled": enabled, "timeout_seconds": 7200, "gpu_timeout_seconds": 900, "every_seconds": 120}
    data["profiles"]["gpu-t4"]["idle_timeout_seconds"] = 2700
    return parse_catalog(data, "platform.yaml", {})


def server(profile=None):
    """A server model as the culler reads it from GET /users (state present with admin:server_state)."""
    state = {"pid": 4242, "selection": {"team": "team-vision", "profile": profile}} if profile else {}
    return {"name": "", "ready": True, "pending": None, "url": "/user/alice/", "state": state,
            "user_options": {"team": "team-vision"}}


def test_each_profile_has_its_timeout():
    assert idle_timeouts(catalog()) == TIMEOUTS


def test_the_local_hub_runs_the_culler_as_a_service_with_a_role_limited_to_stopping_servers():
    c = Config()
    configure_culling(c, catalog(), python="/venv/bin/python")
    assert c.JupyterHub.services == [{
        "name": "jupyterhub-idle-culler",
        "command": ["/venv/bin/python", "-m", "jupyterhub_idle_culler", "--timeout=900", "--cull-every=120",
                    "--cull-users=false", f"--config={CONFIG_FILE}"],
        "environment": {IDLE_TIMEOUTS: json.dumps(TIMEOUTS, sort_keys=True)},
    }]
    assert c.JupyterHub.load_roles == [CULLER_ROLE]  # no admin:users: users are never removed


def test_the_culler_keeps_services_and_roles_configured_before_it():
    c = Config()
    c.JupyterHub.services = [{"name": "platform", "url": "http://127.0.0.1:1"}]
    c.JupyterHub.load_roles = [{"name": "platform", "scopes": ["list:users"], "services": ["platform"]}]
    configure_culling(c, catalog(), python="python3")
    assert [s["name"] for s in c.JupyterHub.services] == ["platform", "jupyterhub-idle-culler"]
    assert [r["name"] for r in c.JupyterHub.load_roles] == ["platform", "mlplatform-idle-culler"]


def test_disabled_culling_runs_no_culler():
    c = Config()
    configure_culling(c, catalog(enabled=False))
    assert "services" not in c.JupyterHub and "load_roles" not in c.JupyterHub
    values = jupyterhub_values(catalog(enabled=False))
    assert values["cull"] == {"enabled": False}
    assert "mlplatform-culling" not in values["hub"]["extraConfig"] and "loadRoles" not in values["hub"]
    extend_chart_culler(Config(JupyterHub={"services": []}), catalog(enabled=False))  # nothing to extend


def test_the_culler_accepts_its_command_line():
    culler = IdleCuller()
    culler.parse_command_line(culler_arguments(catalog()))
    assert (culler.timeout, culler.cull_every, culler.cull_users, culler.config_file) == (900, 120, False,
                                                                                         str(CONFIG_FILE))
    assert (culler.max_age, culler.remove_named_servers) == (0, False)


@pytest.mark.parametrize("profile, idle, culled", [
    ("gpu-a100", 899, False), ("gpu-a100", 900, True),
    ("gpu-t4", 900, False), ("gpu-t4", 2700, True),
    ("cpu", 2700, False), ("cpu", 7200, True),
    # A profile no longer in the catalog, or no state to tell: the culler's --timeout (the shortest).
    ("removed", 900, True), (None, 899, False), (None, 900, True),
])
def test_the_hook_applies_the_servers_profiles_timeout(profile, idle, culled):
    arbiter = profile_arbiter(TIMEOUTS)
    assert arbiter(inactive=timedelta(seconds=idle), inactive_limit=900, server=server(profile)) is culled


def test_the_hook_never_reads_the_users_own_options():
    """user_options are what the user sent; the state is what the spawner applied."""
    model = {**server("cpu"), "user_options": {"team": "team-vision", "profile": "gpu-a100"}}
    assert profile_arbiter(TIMEOUTS)(inactive=timedelta(seconds=1000), inactive_limit=900, server=model) is False
    assert profile_arbiter(TIMEOUTS)(inactive=None, inactive_limit=900, server=model) is False


def test_the_culler_loads_the_hook_from_its_config_file(monkeypatch):
    """The config file as jupyterhub-idle-culler loads it (`--config`), with the table the hub hands over."""
    service = next(iter(configure_and_read(catalog())))
    monkeypatch.setattr(sys, "argv", ["jupyterhub_idle_culler"])
    for name, value in service["environment"].items():
        monkeypatch.setenv(name, value)
    culler = IdleCuller()
    culler.parse_command_line(service["command"][3:])
    culler.load_config_file(culler.config_file)
    hook = culler.cull_arbiter_hook
    assert hook(inactive=timedelta(seconds=1000), inactive_limit=900, server=server("gpu-a100")) is True
    assert hook(inactive=timedelta(seconds=1000), inactive_limit=900, server=server("gpu-t4")) is False


def configure_and_read(cat):
    c = Config()
    configure_culling(c, cat, python=sys.executable)
    return c.JupyterHub.services


def test_an_empty_table_culls_everything_at_the_culler_timeout():
    hook = arbiter_from_environment({})
    assert hook(inactive=timedelta(seconds=900), inactive_limit=900, server=server("cpu")) is True


def test_the_charts_culler_gets_the_hook_from_extra_config(tmp_path):
    """hub.extraConfig runs after the chart's config built its culler (files/hub/jupyterhub_config.py)."""
    cat = catalog()
    values = jupyterhub_values(cat)
    assert values["cull"] == {"enabled": True, "users": False, "adminUsers": True, "removeNamedServers": False,
                              "maxAge": 0, "timeout": 900, "every": 120}
    mounted = tmp_path / "platform.yaml"
    mounted.write_text(values["hub"]["extraFiles"]["mlplatform-catalog"]["stringData"])
    chart_command = ["python3", "-m", "jupyterhub_idle_culler", "--url=http://localhost:8081/hub/api",
                     "--timeout=900", "--cull-every=120", "--concurrency=10"]
    c = Config()
    c.JupyterHub.services = [{"name": "jupyterhub-idle-culler", "command": list(chart_command)}]
    exec(values["hub"]["extraConfig"]["mlplatform-culling"].replace("/etc/mlplatform/platform.yaml", str(mounted)),
         {"c": c})
    assert c.JupyterHub.services == [{
        "name": "jupyterhub-idle-culler",
        "command": [*chart_command, f"--config={CONFIG_FILE}"],
        "environment": {IDLE_TIMEOUTS: json.dumps(TIMEOUTS, sort_keys=True)},
    }]
    assert values["hub"]["loadRoles"] == {"mlplatform-idle-culler-state": {
        "name": "mlplatform-idle-culler-state", "scopes": ["admin:server_state"], "services": ["jupyterhub-idle-culler"]}}
    assert values["hub"]["extraConfig"]["mlplatform-culling"] == CULLING_CONFIG


def test_a_chart_without_its_culler_is_refused_when_the_catalog_culls():
    with pytest.raises(RuntimeError, match=r"enables culling but the chart started no jupyterhub-idle-culler: "
                                           r"set the chart's cull.enabled"):
        extend_chart_culler(Config(JupyterHub={"services": []}), catalog())


def test_chart_values_follow_the_catalog():
    assert chart_cull_values(catalog()) == jupyterhub_values(catalog())["cull"]
