"""The platform service's database opened by several processes at once, as the hub, the service and an
admin's `mlplatform audit` do when they start together: every one gets its tables, none fails."""

from __future__ import annotations

import multiprocessing

from mlplatform_service.database import connect


def _open(url: str, barrier, answers) -> None:
    barrier.wait()
    try:
        connect(url)
        answers.put("ok")
    except Exception as e:  # the test shows what failed
        answers.put(f"{type(e).__name__}: {e}")


def test_processes_opening_a_new_sqlite_database_together_all_get_their_tables(tmp_path):
    # Before: a deferred transaction's schema read then CREATE TABLE, and the switch of a new file to WAL,
    # failed at once with "database is locked" in about half the rounds.
    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(8):
        url = f"sqlite:///{tmp_path / f'round-{round_}.sqlite'}"
        barrier, answers = context.Barrier(6), context.Queue()
        processes = [context.Process(target=_open, args=(url, barrier, answers)) for _ in range(6)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(60)
        failures += [a for a in (answers.get(timeout=10) for _ in processes) if a != "ok"]
    assert failures == []
