"""Quota arithmetic of the local backend's GPU pool."""

import pytest

from hub_config.catalog import load_catalog
from hub_config.gpu_pool import Allocation, GpuPool
from hub_config.profiles import Selection, SelectionError

CATALOG = load_catalog(environ={})


def test_reserve_hands_out_distinct_devices_and_counts_per_team():
    pool = GpuPool(CATALOG)
    a = pool.reserve("alice/", Selection("team-vision", "gpu-a100", "a100", 2))
    b = pool.reserve("bob/", Selection("team-nlp", "gpu-a100", "a100", 1))
    assert a.devices == ("0", "1") and b.devices == ("2",)
    snap = pool.snapshot()
    assert snap.used == {"team-vision": {"a100": 2}, "team-nlp": {"a100": 1}}
    assert snap.pool_free == {"a100": 3, "t4": 2}
    assert pool.reserve("carl/", Selection("team-vision", "cpu")) is None


def test_last_gpu_goes_to_one_server_only():
    pool = GpuPool(CATALOG)
    pool.reserve("alice/", Selection("team-vision", "gpu-a100", "a100", 2))
    pool.reserve("alice/second", Selection("team-vision", "gpu-a100", "a100", 1))
    pool.reserve("dana/", Selection("team-vision", "gpu-a100", "a100", 1))
    with pytest.raises(SelectionError) as e:
        pool.reserve("erin/", Selection("team-vision", "gpu-a100", "a100", 1))
    assert e.value.status == 409
    assert "only 0 of 4 team-vision A100 free" in str(e.value)
    assert pool.holder_of("erin/") is None


def test_release_and_restart_give_devices_back():
    pool = GpuPool(CATALOG)
    pool.reserve("alice/", Selection("team-vision", "gpu-t4", "t4", 2))
    assert pool.snapshot().pool_free["t4"] == 0
    # starting the same server again first returns what it held
    assert pool.reserve("alice/", Selection("team-vision", "gpu-t4", "t4", 1)).devices == ("6",)
    pool.release("alice/")
    pool.release("alice/")  # idempotent
    assert pool.snapshot().used == {}
    assert pool.snapshot().pool_free["t4"] == 2


def test_restore_after_hub_restart_counts_against_quota():
    pool = GpuPool(CATALOG)
    pool.restore("alice/", Allocation("team-vision", "t4", ("6", "7")))
    assert pool.reserve("dana/", Selection("team-vision", "gpu-a100", "a100", 2)).devices == ("0", "1")
    with pytest.raises(SelectionError, match="only 0 of 4 team-vision GPUs free in total"):
        pool.reserve("eric/", Selection("team-vision", "gpu-a100", "a100", 1))
