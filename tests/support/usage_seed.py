"""Usage seeded in the platform service's database with the ledger itself, for the usage endpoints' and page's
tests: March 2025 (a month no other test allocates in), under keys of its own (the hub's are
"server:<user>/..."; a seeded key equal to a running server's would end that server's interval)."""

from __future__ import annotations

from datetime import UTC, datetime

from mlplatform_service.database import connect
from mlplatform_service.usage import UsageLedger


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


MARCH_2025 = (at(2025, 3, 1), at(2025, 4, 1))
# key: (start, end, fields). Prices of the local catalog: A100 $3.40, T4 $0.55 a GPU-hour.
SEED = {
    "seed:server:alice": (at(2025, 3, 10), at(2025, 3, 10, 10), dict(               # 20 h, $68
        kind="server", team="team-vision", user="alice", profile="gpu-a100", gpu_type="a100", gpus=2)),
    "seed:spark:alice": (at(2025, 3, 13), at(2025, 3, 13, 2), dict(                 # 2 h, $6.80
        kind="spark", team="team-vision", user="alice", gpu_type="a100", gpus=1)),
    "seed:model:sentiment": (at(2025, 3, 11), at(2025, 3, 12), dict(                # 24 h, $13.20
        kind="model", team="team-nlp", user="bob", model="sentiment", gpu_type="t4", gpus=1)),
    "seed:server:bob": (at(2025, 3, 12), at(2025, 3, 12, 6), dict(                  # 12 h, $6.60
        kind="server", team="team-nlp", user="bob", profile="gpu-t4", gpu_type="t4", gpus=2)),
}


def service_ledger(platform) -> UsageLedger:
    """The ledger in the local platform's service database (`sqlite:///<data_dir>/platform.sqlite`)."""
    return UsageLedger(connect(f"sqlite:///{platform.data_dir}/platform.sqlite"), platform.load_catalog)


def allocate(ledger: UsageLedger, key: str, start: datetime, end: datetime, **fields) -> None:
    ledger.open(key, at=start, **fields)
    ledger.close(key, at=end)


def seed_march_2025(ledger: UsageLedger) -> None:
    """team-vision 22 GPU-hours ($74.80), team-nlp 36 ($19.80) in March 2025; once per test session."""
    done = {r["key"] for r in ledger.usage(*MARCH_2025, by=("key",))}
    for key, (start, end, fields) in SEED.items():
        if key not in done:
            allocate(ledger, key, start, end, **fields)
