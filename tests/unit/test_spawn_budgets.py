"""The team's budget at spawn (hub_config/governance.py through the spawners' mixin): the local spawner,
a catalog whose team-vision may use 3.5 GPU-hours a month (each GPU server holds 1 h of its GPUs ahead), and
the platform service's database in a temporary file (tests/support/governance.py)."""

import logging
import subprocess
from datetime import UTC, datetime

import pytest
import yaml
from tornado import web
from traitlets.config import Config

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.governance import Governance
from hub_config.spawners.local import LocalPlatformSpawner
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.database import connect
from mlplatform_service.overrides import Overrides

from ..support.hub_user import User

A100 = {"team": "team-vision", "profile": "gpu-a100", "gpu_type": "a100"}


@pytest.fixture
def catalog_file(tmp_path):
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["teams"]["team-vision"]["budget"] = {"period": "month", "gpu_hours": 3.5}
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def spawner(catalog_file: str, user: str) -> LocalPlatformSpawner:
    return LocalPlatformSpawner(user=User(user), catalog_file=catalog_file,
                                log=logging.getLogger("test-spawner"),
                                config=Config({"Governance": {"catalog_file": catalog_file}}))


def records(url: str) -> list[tuple]:
    return [(r["action"], r["actor"], r["target"], r["outcome"]) for r in AuditLog(connect(url)).query()]


async def test_a_server_beyond_the_budget_is_refused_with_the_numbers_and_audited(catalog_file, governance_database):
    alice, dana = spawner(catalog_file, "alice"), spawner(catalog_file, "dana")
    await alice._run_apply_user_options({**A100, "gpu_count": 2})  # holds 2 of the 3.5 GPU-hours
    with pytest.raises(web.HTTPError) as refused:
        await dana._run_apply_user_options({**A100, "gpu_count": 2})
    assert refused.value.status_code == 409
    month = datetime.now(UTC).strftime("%B %Y")
    assert refused.value.log_message % refused.value.args == (
        f"team-vision's budget for {month} cannot take this allocation: 0 GPU-hours used + 2 held by 1 running "
        "allocation + 2 asked (2 a100 GPUs held 1 h ahead) = 4, more than the budget of 3.5 GPU-hours. Stop one of "
        "the team's running servers, deployments or Spark jobs, or ask a platform admin to grant an override.")
    assert dana.selection is None and dana.devices == ()  # the quota reservation was given back too
    assert records(governance_database) == [("budget-refusal", "dana", "server:dana/", "refused")]
    await dana._run_apply_user_options({**A100, "gpu_count": 1})  # what fits is admitted
    line = Governance.of(alice.config).status("team-vision").line
    assert line.startswith("team-vision: 0 of 3.5 GPU-hours used in ")  # nothing used yet: held, not used

    # alice's server ends: its hold goes, dana may take 2 GPUs.
    alice.end_allocation()
    dana.end_allocation()
    await dana._run_apply_user_options({**A100, "gpu_count": 2})
    dana.end_allocation()


async def test_an_admins_override_admits_and_is_audited_under_the_admins_name(catalog_file, governance_database):
    alice, dana = spawner(catalog_file, "alice"), spawner(catalog_file, "dana")
    await alice._run_apply_user_options({**A100, "gpu_count": 2})
    until = datetime(2999, 1, 1, tzinfo=UTC)
    Overrides(connect(governance_database)).grant("team-vision", granted_by="admin", until=until,
                                                  reason="conference deadline")
    await dana._run_apply_user_options({**A100, "gpu_count": 2})
    assert dana.devices != () and records(governance_database) == [
        ("budget-override", "admin", "server:dana/", "succeeded")]
    alice.end_allocation()
    dana.end_allocation()


async def test_cpu_servers_are_never_refused_by_the_budget(catalog_file):
    alice = spawner(catalog_file, "alice")
    await alice._run_apply_user_options({**A100, "gpu_count": 2})
    others = [spawner(catalog_file, name) for name in ("dana", "carol")]
    for other in others:
        await other._run_apply_user_options({"team": "team-vision", "profile": "cpu"})
        assert other.selection.gpu_count == 0
    for s in [alice, *others]:
        s.end_allocation()


async def test_two_users_racing_for_the_last_budget_get_one_server(catalog_file, governance_database):
    import asyncio

    alice, dana = spawner(catalog_file, "alice"), spawner(catalog_file, "dana")
    outcomes = await asyncio.gather(alice._run_apply_user_options({**A100, "gpu_count": 2}),
                                    dana._run_apply_user_options({**A100, "gpu_count": 2}), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, web.HTTPError)]
    assert len(refused) == 1 and refused[0].status_code == 409
    assert [s.selection is not None for s in (alice, dana)].count(True) == 1
    status = Governance.of(alice.config).status("team-vision")
    assert (status.held_gpu_hours, status.budget_gpu_hours) == (2, 3.5)  # never more than the budget
    for s in (alice, dana):
        s.end_allocation()


async def test_a_server_life_ends_with_one_stop_record(catalog_file, governance_database, tmp_path):
    """LocalProcessSpawner.stop polls until the process is gone and JupyterHub polls servers too: each poll that
    finds the process gone once wrote a `stop` record of its own (three per stop, the last without a team)."""
    def server(user: str, cmd: list[str]) -> LocalPlatformSpawner:
        s = LocalPlatformSpawner(user=User(user), catalog_file=catalog_file, data_dir=str(tmp_path),
                                 log=logging.getLogger("test-spawner"),
                                 config=Config({"Governance": {"catalog_file": catalog_file}}))
        s.proc = subprocess.Popen(cmd)  # the server's process, as start() leaves it
        s.pid = s.proc.pid
        return s

    cpu = {"team": "team-vision", "profile": "cpu"}
    alice = server("alice", ["sleep", "60"])  # stopped by the hub
    await alice._run_apply_user_options(cpu)
    await alice.stop()
    assert await alice.poll() is not None
    bob = server("bob", ["true"])  # ends on its own; the hub finds it gone at a poll
    await bob._run_apply_user_options(cpu)
    bob.proc.wait()
    assert await bob.poll() == 0 and await bob.poll() == 0
    await bob.stop()
    fields = {"team": "team-vision", "profile": "cpu", "gpu_type": None, "gpus": 0}
    assert [(r["action"], r["actor"], r["target"], {"team": r["team"], **r["details"]})
            for r in AuditLog(connect(governance_database)).query()] == [
        ("stop", "alice", "server:alice/", fields), ("stop", "bob", "server:bob/", {**fields, "exit_status": "0"})]
