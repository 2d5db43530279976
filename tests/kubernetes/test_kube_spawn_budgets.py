"""The team's budget at spawn on the Kubernetes backend: CatalogKubeSpawner against the fake API server, a
catalog whose team-vision may use 3.5 GPU-hours a month (each GPU server holds 1 h of its GPUs ahead), the
platform service's database in a temporary file (tests/support/governance.py). The same rule as the local
spawner's (tests/unit/test_spawn_budgets.py): a refusal is a 409 with the numbers, audited, and leaves no
pod, no Secret and no quota reservation behind; the spawn form shows the budget line."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import yaml
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.database import connect
from tornado import web

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.spawners.kube_quota import stop_cluster_quotas
from hub_config.spawners.kubernetes import CatalogKubeSpawner

from .test_kubespawner import VISION, gpu_quota, spawner, start

A100x2 = {"team": VISION, "profile": "gpu-a100", "gpu_type": "a100", "gpu_count": 2}


@pytest.fixture
def catalog_file(tmp_path):
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["teams"][VISION]["budget"] = {"period": "month", "gpu_hours": 3.5}
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
async def cluster(fake_kube, kubeconfig):
    fake_kube.namespace(VISION)
    fake_kube.kubelet()
    fake_kube.seed(gpu_quota(8))  # the quota would take both servers: only the budget refuses
    yield fake_kube
    await CatalogKubeSpawner._stop_all_reflectors()
    await stop_cluster_quotas()


def records(url: str) -> list[tuple]:
    return [(r["action"], r["actor"], r["target"], r["outcome"]) for r in AuditLog(connect(url)).query()]


async def test_a_server_beyond_the_budget_is_refused_with_the_numbers_before_any_pod(cluster, catalog_file,
                                                                                     governance_database):
    alice, dana = spawner("alice", catalog_file=catalog_file), spawner("dana", catalog_file=catalog_file)
    await start(alice, A100x2)  # holds 2 of the 3.5 GPU-hours
    assert "Budget: team-vision: 0 of 3.5 GPU-hours used in" in await dana.options_form(dana)
    with pytest.raises(web.HTTPError) as refused:
        await start(dana, A100x2)
    assert refused.value.status_code == 409
    month = datetime.now(UTC).strftime("%B %Y")
    assert refused.value.log_message % refused.value.args == (
        f"team-vision's budget for {month} cannot take this allocation: 0 GPU-hours used + 2 held by 1 running "
        "allocation + 2 asked (2 a100 GPUs held 1 h ahead) = 4, more than the budget of 3.5 GPU-hours. Stop one of "
        "the team's running servers, deployments or Spark jobs, or ask a platform admin to grant an override.")
    assert [p["metadata"]["name"] for p in cluster.list("pods", VISION)] == ["jupyter-alice"]
    assert [s["metadata"]["name"] for s in cluster.list("secrets", VISION)] == [alice.token_secret_name]
    assert dana.selection is None and alice.quota.reservations.keys() == {f"{VISION}/jupyter-alice"}
    assert records(governance_database) == [("spawn", "alice", "server:alice/", "succeeded"),
                                            ("budget-refusal", "dana", "server:dana/", "refused")]

    # Two users racing for what is left (1.5 GPU-hours, one GPU each): one server, never past the budget.
    carol, erin = spawner("carol", catalog_file=catalog_file), spawner("erin", catalog_file=catalog_file)
    outcomes = await asyncio.gather(start(carol, {**A100x2, "gpu_count": 1}), start(erin, {**A100x2, "gpu_count": 1}),
                                    return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["HTTPError", "str"]  # one URL, one 409
    assert len(cluster.list("pods", VISION)) == 2
    for s in (alice, carol, erin):
        if s.selection is not None:
            await s.stop()
