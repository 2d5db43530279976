"""Benchmark of brokered S3 credentials: what the broker costs, and that S3 calls cost nothing more.

Starts a fresh local platform (temp data dir, own ports), logs alice in, starts her server, then:

  vending through the hub, cached / uncached   GET /hub/api/mlplatform/s3-credentials/alice with the
                        server's token (what the credential process does): the broker answering from
                        its cache (half the requests first, half after the restarts below), and with an
                        STS AssumeRoleWithWebIdentity on every request (the hub restarted with
                        `S3CredentialBroker.renew_before_seconds` above the credentials' lifetime, then
                        restarted as it was): the same path, hit or miss
  vending in-process, cached / uncached   the broker itself in this process, from its cache and
                        renewing on every call: the same path, hit or miss, without HTTP and the hub
  STS AssumeRoleWithWebIdentity alone   the STS call itself (the broker's boto3 client and request);
                        the three in-process measures alternate in rounds, so a busy spell of the
                        machine does not land on one of them
  credential process    `mlplatform-aws-credentials` as the SDK runs it (a new Python process each time)
  S3 PUT / GET 1 KiB    boto3 with the brokered credentials (credential_process from the notebook's
                        environment) against boto3 with static keys, same server, same objects

Figures: min, median and p99 of each measure (per-request times), and requests per second (1 / mean).

    .venv/bin/python bench/s3_credentials.py --requests 200 --port-base 58000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import botocore.exceptions  # noqa: E402
import requests  # noqa: E402

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform_core.catalog import load_catalog  # noqa: E402
from hub_config.s3_broker import S3CredentialBroker, session_policy  # noqa: E402
from running_platform import alice_on_a_fresh_platform  # noqa: E402
from tests.support.hub import PASSWORDS, UserSession  # noqa: E402
from tests.support.processes import server_process  # noqa: E402


ROUNDS = 4  # of the in-process measures, alternated


def timings(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name: str, ms: list[float]) -> tuple:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return name, len(ms), statistics.median(ms), p99, 1000 / statistics.mean(ms), ms[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per measure (default 200)")
    ap.add_argument("--port-base", type=int, default=58000)
    args = ap.parse_args()
    n = args.requests

    with alice_on_a_fresh_platform(args.port_base) as (platform, alice, env, _):
        admin = UserSession(platform.hub_url, "admin")
        admin.login(PASSWORDS["admin"])
        http = requests.Session()
        http.headers["Authorization"] = f"token {env['JUPYTERHUB_API_TOKEN']}"
        url = env["MLPLATFORM_CREDENTIALS_URL"]
        assert http.get(url).status_code == 200  # warm the cache

        hub_cached = timings(lambda i: http.get(url).raise_for_status(), n // 2)  # the rest after the restarts

        # The broker in this process, as the hub runs it: from its cache, and renewing (STS) on every call.
        broker = S3CredentialBroker(load_catalog(DEFAULT_CATALOG))
        id_token = admin.api("GET", "/users/alice").json()["auth_state"]["id_token"]

        async def token():
            return id_token

        async def vend(count):
            out = []
            for _ in range(count):
                t = time.perf_counter()
                await broker.credentials("alice", "team-vision", token)
                out.append((time.perf_counter() - t) * 1000)
            return out

        # The STS call alone: the broker's own client and request, without its lock, thread and cache.
        sts, s3_settings, granted = broker._sts_client(), broker.catalog.storage.s3, []

        def assume(i):
            t = time.time()
            answer = sts.assume_role_with_web_identity(
                RoleArn=s3_settings.role_arn, RoleSessionName="mlplatform-alice", WebIdentityToken=id_token,
                Policy=json.dumps(session_policy(broker.catalog, "alice", "team-vision")),
                DurationSeconds=s3_settings.credentials_duration_seconds)
            granted.append(answer["Credentials"]["Expiration"].timestamp() - t)

        # Rounds that alternate the three, so a busy spell of the machine does not land on one of them.
        in_process: dict[str, list[float]] = {}
        asyncio.run(vend(1))  # fills the cache
        for _ in range(ROUNDS):
            broker.renew_before_seconds = 1200  # the default: the cached credentials are fresh
            in_process.setdefault("vending in-process, cached", []).extend(asyncio.run(vend(n // ROUNDS)))
            broker.renew_before_seconds = 10**9  # every call renews: STS each time
            in_process.setdefault("vending in-process, uncached", []).extend(asyncio.run(vend(n // ROUNDS)))
            in_process.setdefault("STS AssumeRoleWithWebIdentity alone", []).extend(timings(assume, n // ROUNDS))
        rows = [row(name, ms) for name, ms in in_process.items()]
        print(f"STS granted {min(granted):.0f}–{max(granted):.0f} s of the {s3_settings.credentials_duration_seconds} s "
              "asked for", file=sys.stderr)
        rows.append(row("credential process (new process)", timings(
            lambda i: subprocess.run(["mlplatform-aws-credentials"], env=env, check=True, capture_output=True),
            max(10, n // 10))))

        keys = json.loads((platform.data_dir / "secrets.json").read_text())
        static = boto3.client("s3", endpoint_url=platform.s3_url, region_name="us-east-1",
                              aws_access_key_id=keys["s3_access_key"], aws_secret_access_key=keys["s3_secret_key"])
        # The notebook's own path: boto3 reads AWS_CONFIG_FILE and runs the credential process.
        os.environ.update({k: env[k] for k in ("PATH", "AWS_CONFIG_FILE", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                                               "MLPLATFORM_CREDENTIALS_URL", "JUPYTERHUB_API_TOKEN")})
        brokered = boto3.Session().client("s3")
        body = os.urandom(1024)
        brokered.put_object(Bucket="platform", Key="users/alice/bench/warm", Body=body)  # credentials fetched
        # The same temporary keys handed to boto3 directly: separates the SDK's refresh machinery (none
        # here) from what the S3 server spends on session credentials (token check, session policy).
        temp = http.get(url).json()
        direct = boto3.client("s3", endpoint_url=platform.s3_url, region_name="us-east-1",
                              aws_access_key_id=temp["AccessKeyId"], aws_secret_access_key=temp["SecretAccessKey"],
                              aws_session_token=temp["SessionToken"])
        # Alternate the clients (and the objects' first reads) so none gets the warmer server.
        samples: dict[str, list[float]] = {}
        clients = [("static keys", static), ("brokered", brokered), ("temporary keys, no broker", direct)]
        for label, client in clients * 2:
            try:
                client.head_bucket(Bucket="platform") if label == "static keys" else \
                    client.put_object(Bucket="platform", Key="users/alice/bench/check", Body=body)
            except botocore.exceptions.ClientError as e:
                raise SystemExit(f"S3 refused the client with {label}: {e} (the hub's credentials: expiring "
                                 f"{temp['Expiration']}, now {time.strftime('%H:%M:%S', time.gmtime())} UTC)") from None
            samples.setdefault(f"S3 PUT 1 KiB, {label}", []).extend(timings(
                lambda i, c=client: c.put_object(Bucket="platform", Key=f"users/alice/bench/{i}", Body=body),
                n // 2))
            samples.setdefault(f"S3 GET 1 KiB, {label}", []).extend(timings(
                lambda i, c=client: c.get_object(Bucket="platform", Key=f"users/alice/bench/{i}")["Body"].read(),
                n // 2))
        rows += [row(name, ms) for name, ms in sorted(samples.items())]

        # The hub path, every request a cache miss: the hub restarted with its broker renewing on every call
        # (its cache is in memory), then restarted as it was for the other half of the cached requests.
        def restart_hub(options: dict) -> None:
            alice.stop()  # the hub's stop ends her server: stop it through the hub first
            platform.stop_component("hub")
            platform.hub_options = options
            platform.start_component("hub")  # alice's login outlives the restart (the cookie secret is on disk)
            assert alice.start(profile="cpu").status_code in (201, 202)
            alice.wait_ready()
            http.headers["Authorization"] = (
                f"token {server_process('alice', platform.ports.hub_api)[1]['JUPYTERHUB_API_TOKEN']}")
            http.get(url).raise_for_status()  # the first request after a start: fills the cache, if any

        default_options = dict(platform.hub_options)
        restart_hub({**default_options, "S3CredentialBroker.renew_before_seconds": 10**9})
        hub_uncached = timings(lambda i: http.get(url).raise_for_status(), n)
        restart_hub(default_options)
        hub_cached += timings(lambda i: http.get(url).raise_for_status(), n - n // 2)
        rows[:0] = [row("vending through the hub, cached", hub_cached),
                    row("vending through the hub, uncached", hub_uncached)]

    print(f"\n{'measure':<42} {'n':>5} {'min ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8}")
    for name, count, p50, p99, rate, low in rows:
        print(f"{name:<42} {count:>5} {low:>8.2f} {p50:>8.2f} {p99:>8.2f} {rate:>8.0f}")
    by_name = {r[0]: r for r in rows}
    print()
    for op in ("PUT", "GET"):
        s = by_name[f"S3 {op} 1 KiB, static keys"]
        for label in ("brokered", "temporary keys, no broker"):
            b = by_name[f"S3 {op} 1 KiB, {label}"]
            print(f"S3 {op}: {label} / static keys p50 = {b[2] / s[2]:.2f}×, throughput {b[4] / s[4]:.2f}×")
    for where in ("through the hub", "in-process"):
        cached, uncached = by_name[f"vending {where}, cached"], by_name[f"vending {where}, uncached"]
        print(f"vending {where}: uncached / cached p50 = {uncached[2] / cached[2]:.1f}×")
    print(f"STS AssumeRoleWithWebIdentity alone: p50 {by_name['STS AssumeRoleWithWebIdentity alone'][2]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
