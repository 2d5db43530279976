"""The rollout gateway's cost (issue 12's evidence wall): the local Ray head's endpoint through its gateway (HAProxy +
gateway.lua) and the evidence shipper, against the same Ray Serve endpoint called directly.

    .venv/bin/python bench/gateway.py --port-base 38000 --runs 3 --duration 10 --connections 8

One MLflow server (SQLite), one throwaway SeaweedFS (the evidence goes under the platform's prefix), one local Ray
head, whose gateway listens on the endpoints' port. The tests' small scikit-learn model is registered twice and
served as an endpoint in rollout (the serving backend's start_rollout: the champion at /bench, the candidate as
an application of its own at /bench--candidate; the same fast model, so the numbers show the gateway, not models).
Each configuration is the serving backend's set_rollout / set_inference_log (the gateway's map, changed at runtime)
and gets bench/serving.py's load client (`--connections` keep-alive connections, one row per request, `--duration`
s):

    direct (Serve)          Serve's HTTP port, no gateway (the endpoint before the gateway)
    gateway, mode off       through the gateway, the champion answers, evidence on
    shadow, evidence off    every request mirrored to the candidate, no evidence
    shadow, evidence on     … and both sides' lines shipped to S3 (Parquet)
    canary 5 %, evidence off / on

Requests per CPU-second count every process that serves: the Ray head's (its gateway among them), and for the
gateway rows the shipper (a process of its own here, as the platform service is). Each run measures every
configuration in an order of its own. The issue's goal: routing + logging cost ≤ 15 % of throughput.
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

from hub_config.catalog import DEFAULT_CATALOG  # noqa: E402
from mlplatform_core.catalog import load_catalog  # noqa: E402
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing  # noqa: E402
from mlplatform.serving.rollout import rollout  # noqa: E402
from mlplatform.serving.spec import serving_request  # noqa: E402
from mlplatform_core.contract import PlatformEnvironment  # noqa: E402
from mlplatform_service.evidence import evidence_prefix  # noqa: E402

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
# (label, the rollout or None: Serve directly, evidence recorded)
CONFIGS = [("direct (Serve)", None, False),
           ("gateway, mode off", {"mode": "off"}, True),
           ("shadow, evidence off", {"mode": "shadow"}, False),
           ("shadow, evidence on", {"mode": "shadow"}, True),
           ("canary 5 %, evidence off", {"mode": "canary", "share": 0.05}, False),
           ("canary 5 %, evidence on", {"mode": "canary", "share": 0.05}, True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=38000, help="MLflow: base + 500, the Ray head: base + 600 .. "
                        "+ 799, SeaweedFS: 8 free ports from base + 800")
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
    tracking, shippers = None, []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        with ExitStack() as stack:
            head.stop()
            shutil.rmtree(head.root, ignore_errors=True)
            (tmp / "seaweedfs").mkdir()
            s3_url, keys = stack.enter_context(
                seaweedfs_server(tmp / "seaweedfs", args.port_base + 800, REGION, BUCKET))
            tracking = start_mlflow_server(args.port_base + 500, tmp / "mlflow")
            # The platform service's part: the shipper on the head's evidence socket (the gateway's ring connects
            # to it once the head runs).
            shipper = subprocess.Popen([sys.executable, "-c", SHIPPER, json.dumps({
                "url": s3_url, "region": REGION, "key": keys["s3_access_key"], "secret": keys["s3_secret_key"],
                "socket": str(config.evidence_socket), "bucket": BUCKET,
                "prefix": evidence_prefix("platform", TEAM)})], stdout=subprocess.PIPE, text=True,
                start_new_session=True)
            shippers.append(shipper)
            name = unique_name("bench")
            champion, candidate = register_model(mlflow_url, name), register_model(mlflow_url, name)
            os.environ["MLFLOW_TRACKING_URI"] = mlflow_url
            body = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
            backend.deploy(serving_request(name="bench", model_uri=champion.uri), model_version=champion.version,
                           env={"MLFLOW_TRACKING_URI": mlflow_url}, secrets={}, owner={"user": "bench", "team": TEAM})
            wait_for_prediction(backend.url("bench") + "/predict", body)
            log_settings = load_catalog(DEFAULT_CATALOG).serving.inference_log.model_dump()
            backend.start_rollout("bench", model_version=candidate.version, requested_uri=candidate.uri,
                                  rollout=rollout(mode="shadow"), inference_log=log_settings)
            deadline = time.monotonic() + 300
            while backend.status("bench")["state"] != "running":  # the candidate's too, seen healthy by the gateway
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the rollout did not start: {backend.status('bench')}")
                time.sleep(0.5)
            direct, routed = f"{config.serve_url}/bench/predict", backend.url("bench") + "/predict"

            def pids(direct_row: bool):
                return head.processes if direct_row else lambda: head.processes() + [shipper.pid]

            results: dict[str, list[dict]] = {label: [] for label, _, _ in CONFIGS}
            load(direct, body, args.connections, 2)
            for i in range(args.runs):
                for label, settings, logged in random.Random(i).sample(CONFIGS, len(CONFIGS)):
                    url = direct
                    if settings is not None:
                        backend.set_inference_log("bench", log_settings if logged else None)
                        backend.set_rollout("bench", rollout(**settings))
                        url = routed
                    load(url, body, args.connections, 1)
                    result = measured(url, body, pids(settings is None), args)
                    results[label].append(result)
                    print(f"run {i + 1}: {label}: {result['rps']:.0f} req/s", file=sys.stderr)
            backend.end_rollout("bench", promote=False)
            shipper.send_signal(signal.SIGTERM)
            out, _ = shipper.communicate(timeout=60)
            stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        report(args, results, stats)
    finally:
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
          f"processes (the gateway among them), and for the gateway rows the evidence shipper. The shipper: {stats}")


if __name__ == "__main__":
    main()
