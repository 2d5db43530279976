"""The local backends' shared helpers: private directories (refused, never repaired, when another user
could use them) and state files written atomically by concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from mlplatform import localhost

WRITERS, WRITES = 4, 40


def test_a_missing_directory_is_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        made = localhost.private_directory(tmp_path / "a" / "state")
    finally:
        os.umask(old)
    assert made == tmp_path / "a" / "state" and made.stat().st_mode & 0o777 == 0o700
    assert localhost.private_directory(made) == made  # an existing private one is used as it is


@pytest.mark.parametrize("mode", [0o755, 0o711, 0o770, 0o707, 0o1777])
def test_a_directory_open_to_others_is_refused_not_repaired(tmp_path, mode):
    path = tmp_path / "state"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(localhost.UnsafeDirectory) as info:
        localhost.private_directory(path)
    assert str(info.value) == (f"refusing to use {path}: its mode is {mode & 0o7777:04o} (the group or others may "
                               f"use it); allowed: 0700 (only you). Run `chmod 700 {path}` if what it holds is yours "
                               "alone, or choose another directory")
    assert path.stat().st_mode & 0o7777 == mode


def test_a_symbolic_link_or_a_file_is_refused(tmp_path):
    target = localhost.private_directory(tmp_path / "target")
    (tmp_path / "link").symlink_to(target)  # another user's link in /tmp would point where they like
    with pytest.raises(localhost.UnsafeDirectory, match=f"^refusing to use {tmp_path / 'link'}: it is a symbolic "
                                                        "link; allowed: a directory of your own with mode 0700"):
        localhost.private_directory(tmp_path / "link")
    (tmp_path / "file").write_text("")
    with pytest.raises(localhost.UnsafeDirectory, match="it is not a directory"):
        localhost.private_directory(tmp_path / "file")
    with pytest.raises(localhost.UnsafeDirectory, match="it does not exist"):
        localhost.private_directory(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's needs root")
def test_another_users_directory_is_refused(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)  # as someone who pre-created a predictable name in /tmp
    with pytest.raises(localhost.UnsafeDirectory) as info:
        localhost.private_directory(path)
    assert str(info.value) == (f"refusing to use {path}: it belongs to uid 65534, not to this user (uid 0); allowed: "
                               "a directory of your own with mode 0700. Choose another directory (or have its owner "
                               "remove it)")


def _write_many(path: str, writer: int) -> str | None:
    """Write the state file WRITES times; the error, if one was raised."""
    try:
        for n in range(WRITES):
            localhost.write_json(Path(path), {"writer": writer, "n": n, "pad": "x" * 200_000})
    except OSError as e:  # handed back to the test (a shared temp name: moved away by another writer)
        return f"{type(e).__name__}: {e}"
    return None


def test_concurrent_writers_never_clash_and_readers_never_see_half_a_file(tmp_path):
    path = tmp_path / "state.json"
    localhost.write_json(path, {"writer": -1, "n": 0, "pad": "x" * 200_000})
    with multiprocessing.get_context("fork").Pool(WRITERS) as pool:
        pending = pool.starmap_async(_write_many, [(str(path), w) for w in range(WRITERS)])
        seen = []
        while not pending.ready():
            seen.append(json.loads(path.read_text()))  # whole documents only
        errors = pending.get(timeout=120)
    assert errors == [None] * WRITERS
    assert seen and all(len(doc["pad"]) == 200_000 for doc in seen)
    final = json.loads(path.read_text())
    assert final["n"] == WRITES - 1 and final["writer"] in range(WRITERS)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind
    assert path.stat().st_mode & 0o777 == 0o600  # state files are private by default


def test_polls_are_fast_at_first_then_at_most_every_interval():
    waits = localhost.poll_intervals(1.0, first=0.1)
    seen = [next(waits) for _ in range(30)]
    assert seen[0] == 0.1 and all(a <= b for a, b in zip(seen, seen[1:])) and seen[-1] == 1.0
    assert sum(seen[:10]) < 2  # ten polls in the first two seconds: a replica ready in 3 s is seen at once
    plain = localhost.poll_intervals(0.5)
    assert [next(plain) for _ in range(3)] == [0.5, 0.5, 0.5]


def test_wait_until_with_a_first_wait_notices_within_a_fraction_of_the_interval():
    started = time.monotonic()
    assert localhost.wait_until(lambda: time.monotonic() - started > 0.3, 5, interval=2.0, first=0.05)
    assert time.monotonic() - started < 0.6  # with only interval=2.0: 2 s
