"""Benchmark of brokered S3 credentials: what the broker costs, and that S3 calls cost nothing more.

Starts a fresh local platform (temp data dir, own ports), logs alice in, starts her server, then:

  vending, cached (hub endpoint)   GET /hub/api/mlplatform/s3-credentials/alice with the server's token
                        (what the credential process does; the broker answers from its cache)
  vending, cached / uncached (in-process)   the broker itself, from its cache and with an STS
                        AssumeRoleWithWebIdentity on every call: the same path, cache hit or miss
  credential process    `mlplatform-aws-credentials` as the SDK runs it (a new Python process each time)
  S3 PUT / GET 1 KiB    boto3 with the brokered credentials (credential_process from the notebook's
                        environment) against boto3 with static keys, same server, same objects

    .venv/bin/python bench/s3_credentials.py --requests 200 --port-base 39000
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
import requests  # noqa: E402

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform_core.catalog import load_catalog  # noqa: E402
from hub_config.s3_broker import S3CredentialBroker  # noqa: E402
from running_platform import alice_on_a_fresh_platform  # noqa: E402
from tests.support.hub import PASSWORDS, UserSession  # noqa: E402


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
    return name, len(ms), statistics.median(ms), p99, 1000 / statistics.mean(ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per measure (default 200)")
    ap.add_argument("--port-base", type=int, default=39000)
    args = ap.parse_args()
    n = args.requests

    with alice_on_a_fresh_platform(args.port_base) as (platform, _, env, _):
        admin = UserSession(platform.hub_url, "admin")
        admin.login(PASSWORDS["admin"])
        http = requests.Session()
        http.headers["Authorization"] = f"token {env['JUPYTERHUB_API_TOKEN']}"
        url = env["MLPLATFORM_CREDENTIALS_URL"]
        assert http.get(url).status_code == 200  # warm the cache

        rows = [row("vending, cached (hub endpoint)", timings(lambda i: http.get(url).raise_for_status(), n))]

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

        asyncio.run(vend(1))  # fills the cache
        rows.append(row("vending, cached (broker in-process)", asyncio.run(vend(n))))
        broker.renew_before_seconds = 10**9  # every call renews: STS each time
        rows.append(row("vending, uncached (STS call)", asyncio.run(vend(n))))
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
            samples.setdefault(f"S3 PUT 1 KiB, {label}", []).extend(timings(
                lambda i, c=client: c.put_object(Bucket="platform", Key=f"users/alice/bench/{i}", Body=body),
                n // 2))
            samples.setdefault(f"S3 GET 1 KiB, {label}", []).extend(timings(
                lambda i, c=client: c.get_object(Bucket="platform", Key=f"users/alice/bench/{i}")["Body"].read(),
                n // 2))
        rows += [row(name, ms) for name, ms in sorted(samples.items())]

    print(f"\n{'measure':<42} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8}")
    for name, count, p50, p99, rate in rows:
        print(f"{name:<42} {count:>5} {p50:>8.2f} {p99:>8.2f} {rate:>8.0f}")
    by_name = {r[0]: r for r in rows}
    print()
    for op in ("PUT", "GET"):
        s = by_name[f"S3 {op} 1 KiB, static keys"]
        for label in ("brokered", "temporary keys, no broker"):
            b = by_name[f"S3 {op} 1 KiB, {label}"]
            print(f"S3 {op}: {label} / static keys p50 = {b[2] / s[2]:.2f}×, throughput {b[4] / s[4]:.2f}×")
    cached, uncached = by_name["vending, cached (broker in-process)"], by_name["vending, uncached (STS call)"]
    endpoint = by_name["vending, cached (hub endpoint)"]
    print(f"vending in-process: uncached (STS) / cached p50 = {uncached[2] / cached[2]:.1f}×; "
          f"the hub endpoint (HTTP, auth, cache) / the broker's cache p50 = {endpoint[2] / cached[2]:.1f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
