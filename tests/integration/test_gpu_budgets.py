"""The team's budget at the local backend's GPU reservations of served models, through the real hub, provider and
platform service: a deploy the budget cannot take is refused (409 with the numbers, audited, nothing reserved,
nothing handed to Ray Serve, nothing in the usage ledger); an admin's override admits it, audited under the
admin's name; deploy, redeploy and delete of a GPU model are in the audit log.

The calls are those of the notebook's local serving backend (`HubGpuReservations` with the server's own token);
the refusal goes through `LocalServing.deploy` itself, which asks the hub before it starts a Ray head, so no
head is started here. The team's usage of the current period is seeded up to 1.5 GPU-hours short of its budget
and removed at the end (the session's other tests see team-vision's budget as before).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import requests
from mlplatform.serving.errors import ServingConflict
from mlplatform.serving.gpu_reservations import HubGpuReservations
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing
from mlplatform.serving.spec import serving_request
from mlplatform_core.contract import PlatformEnvironment
from sqlalchemy import delete, select

from mlplatform_service.usage import Interval

from ..conftest import BASE
from ..support.usage_seed import allocate, service_ledger

TEAM = "team-vision"
RAY_PORT = BASE + 5700  # never started: the hub refuses before the backend would start a head
ROOM = 1.5  # GPU-hours left in the budget after seeding: one GPU held 1 h ahead fits, a second does not


def auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def budget(env) -> dict:
    r = requests.get(f"{env['MLPLATFORM_SERVICE_URL']}/api/budgets/{TEAM}", headers=auth(env["JUPYTERHUB_API_TOKEN"]),
                     timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@contextmanager
def usage_seeded_near_the_budget(platform, env, room: float):
    """A closed interval of this period in the service's ledger, so that the team's used + held GPU-hours are `room`
    short of its budget; deleted from the ledger at the end."""
    status = budget(env)
    seed = status["budget_gpu_hours"] - room - status["used_gpu_hours"] - status["held_gpu_hours"]
    assert seed > 0, f"{TEAM} already uses more than its budget less {room} GPU-hours: {status}"
    now = datetime.now(UTC)
    # Within this period and before now, however early in the month: as many T4s as it takes, for at most an hour.
    room_s = min(3600.0, (now - datetime.fromisoformat(status["period_start"])).total_seconds() - 2)
    gpus = math.ceil(seed * 3600 / room_s)
    end = now - timedelta(seconds=1)
    ledger = service_ledger(platform)
    key = f"seed:budget:{uuid.uuid4().hex[:8]}"
    allocate(ledger, key, end - timedelta(hours=seed / gpus), end, kind="server", team=TEAM, user="alice",
             profile="gpu-t4", gpu_type="t4", gpus=gpus)
    try:
        yield ledger
    finally:
        with ledger.sessions.begin() as session:
            session.execute(delete(Interval).where(Interval.key == key))


def intervals(ledger, key: str) -> list[tuple[int, bool]]:
    """(gpus, still open) of each interval of `key`, oldest first."""
    with ledger.sessions() as session:
        rows = session.scalars(select(Interval).where(Interval.key == key).order_by(Interval.id)).all()
        return [(row.gpus, row.ended_at is None) for row in rows]


def reserved(platform) -> dict:
    return json.loads((platform.data_dir / "gpu-reservations.json").read_text())["reservations"]


def audit(env, admin_token: str, target: str) -> list[dict]:
    r = requests.get(f"{env['MLPLATFORM_SERVICE_URL']}/api/audit", params={"target": target},
                     headers=auth(admin_token), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["records"]


REFUSAL = re.compile(
    r"the hub refused to reserve GPUs for '(?P<app>[a-z0-9-]+)' \(409\): GPUs for served model '(?P=app)' of "
    r"team-vision: team-vision's budget for (?P<period>\w+ \d{4}) cannot take this allocation: (?P<used>[\d,.]+) "
    r"GPU-hours used \+ (?P<held>[\d,.]+) held by (?P<running>\d+) running allocations? \+ 1 asked \(1 a100 GPU held "
    r"1 h ahead\) = (?P<total>[\d,.]+), more than the budget of 500 GPU-hours\. Stop one of the team's running "
    r"servers, deployments or Spark jobs, or ask a platform admin to grant an override\.")


def test_a_gpu_deploy_over_the_budget_is_refused_with_nothing_half_done_and_an_override_admits_it(
        hub, platform, tmp_path):
    # A GPU server of team-vision (an A100 of its 4): the local backend serves on its server's GPU type.
    _, env = hub.start_server("alice", profile="gpu-a100", gpu_type="a100", gpu_count=1)
    admin = hub.login("admin").new_token()
    overrides = f"{env['MLPLATFORM_SERVICE_URL']}/api/budgets/{TEAM}/override"
    reservations = HubGpuReservations.from_environ(env, "alice")  # the notebook backend's client, the server's token
    serving = LocalServing(LocalRayConfig(port=RAY_PORT, root=tmp_path / "ray", num_cpus=2, num_gpus=2),
                           environment=PlatformEnvironment.from_environ(env), hub=reservations)
    suffix = uuid.uuid4().hex[:6]
    first, second = f"budget-a-{suffix}", f"budget-b-{suffix}"
    keys = {app: f"serving:{TEAM}/{app}" for app in (first, second)}
    try:
        with usage_seeded_near_the_budget(platform, env, ROOM) as ledger:
            before = budget(env)
            # Within the budget: the first model's GPU, held 1 h ahead, leaves 0.5 GPU-hours.
            assert reservations.reserve(first, 1, None)["gpu_type"] == "a100"

            # The second would take the team past its budget: refused with the numbers, before any head starts.
            with pytest.raises(ServingConflict) as refused:
                serving.deploy(serving_request(name=second, model_uri=f"models:/{second}/1", gpus=1),
                               model_version="1", env={})
            found = REFUSAL.fullmatch(str(refused.value))
            assert found, str(refused.value)
            assert (found["app"], int(found["running"])) == (second, before["running"] + 1)
            used, held, total = (float(found[n].replace(",", "")) for n in ("used", "held", "total"))
            assert held == before["held_gpu_hours"] + 1
            assert abs(used - (500 - ROOM - before["held_gpu_hours"])) <= 0.15  # what was seeded (+ a few seconds)
            assert abs(total - (500 + 0.5)) <= 0.15 and abs(used + held + 1 - total) <= 0.15
            # Nothing half-done: no reservation, no interval in the ledger, no application, no Ray head.
            assert keys[second] not in reserved(platform) and keys[first] in reserved(platform)
            assert intervals(ledger, keys[second]) == []
            assert serving.names() == [] and not list(serving.apps.glob(f"{second}*"))
            assert not LocalRayHead(serving.config).processes()
            assert budget(env)["running"] == before["running"] + 1  # the first model alone

            # An admin's override admits it, audited under the admin's name.
            until = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            granted = requests.post(overrides, json={"until": until, "reason": "launch demo"}, headers=auth(admin),
                                    timeout=30)
            assert granted.status_code == 201, granted.text
            try:
                admitted = reservations.reserve(second, 1, None)
            finally:
                assert requests.delete(overrides, headers=auth(admin), timeout=30).json() == {"revoked": 1}
            assert (admitted["key"], admitted["count"]) == (keys[second], 1)
            assert intervals(ledger, keys[second]) == [(1, True)]

            # Redeploying the first at the same size asks the budget for nothing: admitted, over budget or not.
            assert reservations.reserve(first, 1, None)["count"] == 1
            for app in (first, second):
                reservations.release(app)
                assert intervals(ledger, keys[app])[-1] == (1, False)
            assert not set(keys.values()) & set(reserved(platform))
    finally:
        for app in (first, second):  # a failure above: give the GPUs back while alice's server runs
            if keys[app] in reserved(platform):
                reservations.release(app)

    records = {app: [(r["actor"], r["action"], r["outcome"], r["team"], r["details"])
                     for r in audit(env, admin, keys[app])] for app in (first, second)}
    a100 = {"gpu_type": "a100", "gpus": 1}
    assert records[first] == [("alice", action, "succeeded", TEAM, details)
                              for action, details in (("deploy", a100), ("redeploy", a100), ("delete", {}))]
    refusal, override, *rest = records[second]
    assert refusal[:4] == ("alice", "budget-refusal", "refused", TEAM)
    assert refusal[4] == {**a100, "message": str(refused.value).split(f"of {TEAM}: ", 1)[1]}
    assert override[:4] == ("admin", "budget-override", "succeeded", TEAM)
    assert override[4] == {**a100, "for": "alice", "override": granted.json()["override"]["id"],
                           "reason": "launch demo"}
    assert rest == [("alice", "deploy", "succeeded", TEAM, a100), ("alice", "delete", "succeeded", TEAM, {})]
