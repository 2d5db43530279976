"""Benchmark of promotion through the platform service against the alternatives a user would pick.

Starts a fresh local platform (temp data dir, own ports), logs alice in, starts her server, registers
one model in team-vision's workspace with two versions that pass every gate, then promotes them in
turn (each promotion moves @champion), timing:

  through the service      `mlplatform.registry.promote` as alice's notebook: HTTP to the hub-managed
                           service, the caller and her teams from the hub, her S3 credentials from the
                           hub, the gates (MLflow reads, the MLmodel from S3), the card, the audit
                           intent and outcome, the description, the alias
  the same engine, in-process   `mlplatform_service.promotion.Promotions` in this process on its own
                           SQLite database (what the service does, without HTTP and the hub)
  direct MLflow alias move `MlflowClient.set_registered_model_alias`: no gates, no card, no audit
                           (what a notebook did before protected aliases, as the platform identity here)

and prints a table with p50/p99 and the service's ratio to each.

    .venv/bin/python bench/promotion.py --promotions 30 --port-base 38000

Seen here (2 cores, 20 promotions each):

    measure                            p50 ms   p99 ms   service ÷ this (p50)
    through the service                 217.4    720.5                   1.00
    the same engine, in-process         221.3    272.9                   0.98
    direct MLflow alias move             26.1     27.8                   8.32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlflow import MlflowClient  # noqa: E402

from mlplatform import registry  # noqa: E402
from running_platform import alice_on_a_fresh_platform  # noqa: E402
from tests.support.as_server import act_as  # noqa: E402
from tests.support.mlflow_access import platform_token, s3_admin, workspace  # noqa: E402
from tests.support.mlflow_models import register_model, unique_name  # noqa: E402
from tests.support.promotion import caller, engine  # noqa: E402

TEAM = "team-vision"
CARD = {"version_tags": {"intended_use": "benchmark"}, "model_tags": {"owner": TEAM}}


class Environ:
    """monkeypatch's setenv for a script: act_as writes the server's variables here."""

    def setenv(self, name: str, value: str) -> None:
        os.environ[name] = value


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name: str, ms: list[float]) -> tuple[str, float, float]:
    ordered = sorted(ms)
    return name, statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def two_versions(platform) -> str:
    name = unique_name("bench")
    with workspace(TEAM), s3_admin(platform):
        for accuracy in (0.95, 0.95):  # a tie with the champion passes "no worse than @champion"
            register_model(platform.mlflow_url, name, metrics={"accuracy": accuracy}, experiment=TEAM, **CARD)
    return name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--promotions", type=int, default=30, help="promotions per measure (default 30)")
    ap.add_argument("--port-base", type=int, default=38000)
    args = ap.parse_args()
    n = args.promotions

    with alice_on_a_fresh_platform(args.port_base) as (platform, _, server_env, tmp):
        os.environ["MLFLOW_TRACKING_TOKEN"] = platform_token(platform)  # this process: the platform identity
        act_as(Environ(), server_env)

        through_service = two_versions(platform)
        service = timed(lambda i: registry.promote(through_service, 1 + i % 2), n)

        in_process = two_versions(platform)
        promotions = engine(platform, tmp, promotion=platform.load_catalog().promotion)
        with workspace(TEAM), s3_admin(platform):
            # The engine in MLflow's default workspace would not see the team's model: bind the team's.
            promotions.mlflow.workspaces = True
            local = timed(lambda i: promotions.promote(caller("alice"), TEAM, in_process, 1 + i % 2), n)

        direct = two_versions(platform)
        with workspace(TEAM):
            client = MlflowClient(platform.mlflow_url)
            alias = timed(lambda i: client.set_registered_model_alias(direct, "champion", str(1 + i % 2)), n)

    rows = [row("through the service", service), row("the same engine, in-process", local),
            row("direct MLflow alias move", alias)]
    print(f"promotions: {n} each, alternating two versions of one model (2 cores)\n")
    print(f"{'measure':32} {'p50 ms':>8} {'p99 ms':>8} {'service ÷ this (p50)':>22}")
    for name, p50, p99 in rows:
        print(f"{name:32} {p50:8.1f} {p99:8.1f} {rows[0][1] / p50:22.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
