"""Quota arithmetic of the local backend's GPU pool."""


import pytest
import yaml
from mlplatform_core.catalog import cached_catalog, load_catalog

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.gpu_pool import Allocation, GpuPool
from hub_config.profiles import Selection, SelectionError
from hub_config.spawners.local import LocalPlatformSpawner

from ..support.hub_user import User

CATALOG = load_catalog(DEFAULT_CATALOG, environ={})


def test_reserve_hands_out_distinct_devices_and_counts_per_team():
    pool = GpuPool(lambda: CATALOG)
    a = pool.reserve("alice/", Selection("team-vision", "gpu-a100", "a100", 2))
    b = pool.reserve("bob/", Selection("team-nlp", "gpu-a100", "a100", 1))
    assert a.devices == ("0", "1") and b.devices == ("2",)
    snap = pool.snapshot()
    assert snap.used == {"team-vision": {"a100": 2}, "team-nlp": {"a100": 1}}
    assert snap.pool_free == {"a100": 3, "t4": 2}
    assert pool.reserve("carl/", Selection("team-vision", "cpu")) is None


def test_last_gpu_goes_to_one_server_only():
    pool = GpuPool(lambda: CATALOG)
    pool.reserve("alice/", Selection("team-vision", "gpu-a100", "a100", 2))
    pool.reserve("alice/second", Selection("team-vision", "gpu-a100", "a100", 1))
    pool.reserve("dana/", Selection("team-vision", "gpu-a100", "a100", 1))
    with pytest.raises(SelectionError) as e:
        pool.reserve("erin/", Selection("team-vision", "gpu-a100", "a100", 1))
    assert e.value.status == 409
    assert "only 0 of 4 team-vision A100 free" in str(e.value)
    assert pool.holder_of("erin/") is None


def test_release_and_restart_give_devices_back():
    pool = GpuPool(lambda: CATALOG)
    pool.reserve("alice/", Selection("team-vision", "gpu-t4", "t4", 2))
    assert pool.snapshot().pool_free["t4"] == 0
    # starting the same server again first returns what it held
    assert pool.reserve("alice/", Selection("team-vision", "gpu-t4", "t4", 1)).devices == ("6",)
    pool.release("alice/")
    pool.release("alice/")  # idempotent
    assert pool.snapshot().used == {}
    assert pool.snapshot().pool_free["t4"] == 2


def test_restore_after_hub_restart_counts_against_quota():
    pool = GpuPool(lambda: CATALOG)
    pool.restore("alice/", Allocation("team-vision", "t4", ("6", "7")))
    assert pool.reserve("dana/", Selection("team-vision", "gpu-a100", "a100", 2)).devices == ("0", "1")
    with pytest.raises(SelectionError, match="only 0 of 4 team-vision GPUs free in total"):
        pool.reserve("eric/", Selection("team-vision", "gpu-a100", "a100", 1))


def write_catalog(path, t4_devices: list[str]) -> None:
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["gpu_types"]["t4"]["local_devices"] = t4_devices
    path.write_text(yaml.safe_dump(data))


T4 = Selection("team-vision", "gpu-t4", "t4", 1)


def test_a_catalog_edit_counts_from_the_next_reservation_without_a_restart(tmp_path):
    path = tmp_path / "platform.yaml"
    write_catalog(path, ["6"])
    pool = GpuPool(lambda: cached_catalog(path))
    assert pool.reserve("alice/", T4).devices == ("6",)
    with pytest.raises(SelectionError, match="only 0 T4 left on this machine"):
        pool.reserve("dana/", T4)

    write_catalog(path, ["6", "7"])  # the platform engineer adds a device
    assert pool.snapshot().pool_free["t4"] == 1
    assert pool.reserve("dana/", T4).devices == ("7",)

    # ... and replaces alice's: she keeps it until her server is gone, but no one else gets it.
    write_catalog(path, ["7", "8", "9"])  # (a different size: the cache also keys on it, not on mtime alone)
    pool.release("dana/")
    assert pool.snapshot().pool_free["t4"] == 3
    assert pool.reserve("dana/", T4).devices == ("7",)
    assert pool.reserve("bob/", Selection("team-nlp", "gpu-t4", "t4", 1)).devices == ("8",)
    assert pool.holder_of("alice/").devices == ("6",)


def test_local_spawners_share_one_pool_that_follows_the_catalog_file(tmp_path):
    path = tmp_path / "platform.yaml"
    write_catalog(path, ["6"])
    alice, dana = (LocalPlatformSpawner(user=User(name), catalog_file=str(path)) for name in ("alice", "dana"))
    assert alice.pool is dana.pool
    alice.reserve(T4)
    assert dana.quota_snapshot().pool_free["t4"] == 0

    write_catalog(path, ["6", "7", "8"])
    assert dana.quota_snapshot().pool_free["t4"] == 2
    dana.reserve(T4)
    assert dana.devices == ("7",)


def test_a_served_model_counts_like_a_server_and_a_refused_change_keeps_what_it_holds():
    pool = GpuPool(lambda: CATALOG)
    pool.reserve("alice/", Selection("team-vision", "gpu-t4", "t4", 1))
    served = pool.reserve_gpus("serving:team-vision/iris", "team-vision", "t4", 1)
    assert served.devices == ("7",)
    assert pool.snapshot().used == {"team-vision": {"t4": 2}}
    with pytest.raises(SelectionError, match="only 0 of 2 team-vision T4 free"):
        pool.reserve("dana/", Selection("team-vision", "gpu-t4", "t4", 1))
    # Replaced by a model asking for more than the quota: refused, the old reservation stays as it was.
    with pytest.raises(SelectionError) as e:
        pool.reserve_gpus("serving:team-vision/iris", "team-vision", "t4", 2)
    assert e.value.status == 409 and "only 1 of 2 team-vision T4 free" in str(e.value)
    assert pool.holder_of("serving:team-vision/iris") == served
    # Adjusted within the quota: the devices it had first.
    alloc = pool.reserve_gpus("serving:team-vision/iris", "team-vision", "a100", 3)
    assert alloc.devices == ("0", "1", "2") and pool.snapshot().used == {"team-vision": {"t4": 1, "a100": 3}}
    pool.release("alice/")
    assert pool.reserve_gpus("serving:team-vision/iris", "team-vision", "t4", 2).devices == ("6", "7")


def test_durable_reservations_survive_a_new_pool_and_server_ones_do_not(tmp_path):
    state = tmp_path / "gpu-reservations.json"
    pool = GpuPool(lambda: CATALOG, state_file=state)
    pool.reserve("alice/", Selection("team-vision", "gpu-a100", "a100", 2))
    pool.reserve_gpus("serving:team-nlp/chat", "team-nlp", "a100", 1, durable=True)
    pool.reserve_gpus("serving:team-vision/iris", "team-vision", "t4", 1, durable=True)
    assert state.stat().st_mode & 0o777 == 0o600
    pool.release("serving:team-vision/iris")

    restarted = GpuPool(lambda: CATALOG, state_file=state)  # the hub started again
    assert restarted.holder_of("serving:team-nlp/chat") == Allocation("team-nlp", "a100", ("2",))
    assert restarted.holder_of("serving:team-vision/iris") is None and restarted.holder_of("alice/") is None
    with pytest.raises(SelectionError, match="only 0 of 1 team-nlp A100 free"):
        restarted.reserve("bob/", Selection("team-nlp", "gpu-a100", "a100", 1))
    restarted.release("serving:team-nlp/chat")
    assert GpuPool(lambda: CATALOG, state_file=state).snapshot().used == {}


def test_a_promoted_candidate_keeps_its_devices_and_both_survive_a_hub_restart(tmp_path):
    state = tmp_path / "gpu-reservations.json"
    pool = GpuPool(lambda: CATALOG, state_file=state)
    champion, candidate = "serving:team-vision/iris", "serving:team-vision/iris/candidate"
    pool.reserve_gpus(champion, "team-vision", "a100", 1, durable=True)
    pool.reserve_gpus(candidate, "team-vision", "a100", 1, durable=True)
    restarted = GpuPool(lambda: CATALOG, state_file=state)  # the hub started again mid-rollout
    assert restarted.holder_of(champion).devices == ("0",) and restarted.holder_of(candidate).devices == ("1",)

    assert restarted.transfer(candidate, champion) == Allocation("team-vision", "a100", ("1",))
    assert restarted.holder_of(candidate) is None and restarted.snapshot().used == {"team-vision": {"a100": 1}}
    again = GpuPool(lambda: CATALOG, state_file=state)
    assert again.holder_of(champion).devices == ("1",) and again.holder_of(candidate) is None
