"""The rollout gateway's cost (issue 12's evidence wall): an endpoint through HAProxy + gateway.lua + the evidence
shipper, against the same Ray Serve endpoint called directly.

    .venv/bin/python bench/gateway.py --port-base 38000 --runs 3 --duration 10 --connections 8

One MLflow server (SQLite), one throwaway SeaweedFS (the evidence goes under the platform's prefix), one local Ray
head with two applications of the tests' small scikit-learn model: the champion at /bench and the candidate at
/bench--candidate (the same fast model, so the numbers show the gateway, not models). Each configuration gets
bench/serving.py's load client (`--connections` keep-alive connections, one row per request, `--duration` s):

    direct                  Serve's HTTP port, no gateway (the endpoint of today without the in-replica router)
    gateway, single         through the gateway, no rollout, evidence on
    shadow, evidence off    every request mirrored to the candidate, no log lines shipped
    shadow, evidence on     … and both sides' lines shipped to S3 (Parquet)
    canary 5 %, evidence off / on

Requests per CPU-second count every process that serves: the Ray head's, and for the gateway rows HAProxy and the
shipper (a process of its own here, as on the platform). Configurations are changed at runtime (`Gateway.set`),
each run in an order of its own. The issue's goal: routing + logging cost ≤ 15 % of throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from serving import (  # noqa: E402  (bench/serving.py)
    load,
    measured,
    start_mlflow_server,
    stop,
    table,
    wait_for_prediction,
)

from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing  # noqa: E402
from mlplatform.serving.rollout import rollout  # noqa: E402
from mlplatform.serving.spec import serving_request  # noqa: E402
from mlplatform_core.contract import PlatformEnvironment  # noqa: E402
from mlplatform_service.evidence import evidence_prefix  # noqa: E402
from mlplatform.serving.gateway import Gateway, GatewaySpec, Traffic  # noqa: E402

from tests.support.mlflow_models import SAMPLE_ROWS, register_model, unique_name  # noqa: E402
from tests.support.seaweedfs_server import seaweedfs_server  # noqa: E402

TEAM, REGION, BUCKET = "team-vision", "us-east-1", "platform"
GOAL_SHARE = 0.15
SHIPPER = """
import json, signal, sys, threading
import boto3
from mlplatform.serving.inference_log import InferenceLog, S3Writer
from mlplatform_service.evidence import EvidenceShipper
a = json.loads(sys.argv[1])
s3 = boto3.client("s3", endpoint_url=a["url"], region_name=a["region"], aws_access_key_id=a["key"],
                  aws_secret_access_key=a["secret"])
shipper = EvidenceShipper(a["socket"], lambda team: InferenceLog(S3Writer(s3, a["bucket"], a["prefix"])))
shipper.start()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
shipper.close(timeout=30)
print(json.dumps(shipper.stats()))
"""
# (label, the gateway's traffic or None: Serve directly, evidence shipped)
CONFIGS = [("direct (Serve)", None, False),
           ("gateway, single", {"mode": "off"}, True),
           ("shadow, evidence off", {"mode": "shadow"}, False),
           ("shadow, evidence on", {"mode": "shadow"}, True),
           ("canary 5 %, evidence off", {"mode": "canary", "share": 0.05}, False),
           ("canary 5 %, evidence on", {"mode": "canary", "share": 0.05}, True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=38000, help="MLflow: base + 500, the Ray head: base + 600 .. "
                        "+ 799, SeaweedFS: 8 free ports from base + 800, gateways: base + 900, base + 901")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()

    mlflow_url = f"http://127.0.0.1:{args.port_base + 500}"
    for key in [k for k in os.environ if k.startswith(("JUPYTERHUB_", "MLPLATFORM_", "MLFLOW_"))]:
        del os.environ[key]
    os.environ.update(MLFLOW_TRACKING_URI=mlflow_url)
    config = LocalRayConfig(port=args.port_base + 600, start_timeout=300)
    head = LocalRayHead(config)
    backend = LocalServing(config, environment=PlatformEnvironment(team=TEAM, backend="local"), environ={})
    tmp = Path(tempfile.mkdtemp(prefix="mlplatform-bench-gateway-"))
    tracking, shippers, gateways = None, [], []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        with ExitStack() as stack:
            head.stop()
            shutil.rmtree(head.root, ignore_errors=True)
            (tmp / "seaweedfs").mkdir()
            s3_url, keys = stack.enter_context(
                seaweedfs_server(tmp / "seaweedfs", args.port_base + 800, REGION, BUCKET))
            tracking = start_mlflow_server(args.port_base + 500, tmp / "mlflow")
            name = unique_name("bench")
            champion, candidate = register_model(mlflow_url, name), register_model(mlflow_url, name)
            os.environ["MLFLOW_TRACKING_URI"] = mlflow_url
            body = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
            owner = {"user": "bench", "team": TEAM}
            for app, version in (("bench", champion), ("bench--candidate", candidate)):
                backend.deploy(serving_request(name=app, model_uri=version.uri), model_version=version.version,
                               env={"MLFLOW_TRACKING_URI": mlflow_url}, secrets={}, owner=owner)
            direct = f"{config.http_url}/bench/predict"
            wait_for_prediction(direct, body)
            wait_for_prediction(f"{config.http_url}/bench--candidate/predict", body)

            # Two gateways (evidence on: its ring to the shipper; off: none), each changed at runtime.
            socket_path = tmp / "evidence.sock"
            shipper = subprocess.Popen([sys.executable, "-c", SHIPPER, json.dumps({
                "url": s3_url, "region": REGION, "key": keys["s3_access_key"], "secret": keys["s3_secret_key"],
                "socket": str(socket_path), "bucket": BUCKET, "prefix": evidence_prefix("platform", TEAM)})],
                stdout=subprocess.PIPE, text=True, start_new_session=True)
            shippers.append(shipper)
            deadline = time.monotonic() + 60
            while not socket_path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            urls = {}
            for logged, port in ((True, args.port_base + 900), (False, args.port_base + 901)):
                spec = GatewaySpec(team=TEAM, endpoint="bench", listen=("127.0.0.1", port),
                                   upstream=("127.0.0.1", config.http_port),
                                   log_socket=socket_path if logged else None)
                g = Gateway(tmp / f"gateway-{port}", spec)
                g.start(Traffic(champion_version=champion.version))
                gateways.append((logged, g))
                urls[logged] = f"http://127.0.0.1:{port}/bench/predict"
                wait_for_prediction(urls[logged], body)
            by_logged = dict(gateways)

            def pids(logged):
                """The Ray head's processes, and a gateway's HAProxy (master and worker) and the shipper."""
                if logged is None:
                    return head.processes
                master = by_logged[logged].process.pid
                extra = [master, *(c.pid for c in psutil.Process(master).children())]
                extra += [shipper.pid] if logged else []
                return lambda: head.processes() + extra

            results: dict[str, list[dict]] = {label: [] for label, _, _ in CONFIGS}
            load(direct, body, args.connections, 2)
            for i in range(args.runs):
                for label, settings, logged in random.Random(i).sample(CONFIGS, len(CONFIGS)):
                    if settings is None:
                        url, who = direct, None
                    else:
                        traffic = Traffic(champion_version=champion.version,
                                          candidate_version=candidate.version if settings["mode"] != "off" else None,
                                          rollout=rollout(**settings))
                        by_logged[logged].set(traffic)
                        url, who = urls[logged], logged
                    load(url, body, args.connections, 1)
                    result = measured(url, body, pids(who), args)
                    results[label].append(result)
                    print(f"run {i + 1}: {label}: {result['rps']:.0f} req/s", file=sys.stderr)
            for _, g in gateways:
                g.stop()
            shipper.send_signal(signal.SIGTERM)
            out, _ = shipper.communicate(timeout=60)
            stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        report(args, results, stats)
    finally:
        for _, g in gateways:
            g.stop()
        for proc in shippers:
            if proc.poll() is None:
                proc.kill()
        head.stop()
        shutil.rmtree(head.root, ignore_errors=True)
        stop(tracking)
        shutil.rmtree(tmp, ignore_errors=True)


def report(args, results, stats) -> None:
    def med(label, key):
        return statistics.median(r[key] for r in results[label])

    base_rps, base_cpu = med("direct (Serve)", "rps"), med("direct (Serve)", "per_cpu_s")
    rows = []
    for label, settings, _ in CONFIGS:
        runs = results[label]
        rps, per_cpu = med(label, "rps"), med(label, "per_cpu_s")
        goal = "" if settings is None else ("yes" if rps / base_rps >= 1 - GOAL_SHARE else "no")
        rows.append((label, f"{rps:.0f}", f"{min(r['rps'] for r in runs):.0f}–{max(r['rps'] for r in runs):.0f}",
                     f"{rps / base_rps:.2f}", f"{med(label, 'p50_ms'):.1f}", f"{med(label, 'p99_ms'):.1f}",
                     f"{per_cpu:.0f}", f"{per_cpu / base_cpu:.2f}", str(sum(r["errors"] for r in runs)), goal))
    print(f"The rollout gateway: median of {args.runs} runs × {args.duration:g} s, {args.connections} connections, "
          "one row per request\n")
    table(("endpoint", "requests/s", "min–max", "÷ direct", "p50 ms", "p99 ms", "req per CPU-s", "÷ direct", "failed",
           f"≥ {1 - GOAL_SHARE:.0%} of direct"), rows)
    print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; CPU of the Ray head's "
          f"processes, and for the gateway rows of HAProxy and the evidence shipper. The shipper: {stats}")


if __name__ == "__main__":
    main()
