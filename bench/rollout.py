"""Safe-rollout benchmark (issue 12): how soon a breaching canary's traffic is back on the champion.

    .venv/bin/python bench/rollout.py --port-base 37000 --runs 3

(What routing and the evidence cost an endpoint is bench/gateway.py's.) One MLflow server (SQLite, `--workers 1`),
one throwaway SeaweedFS (the evidence under the platform's prefix), one local Ray head with its rollout gateway, and
the platform service's parts in this process: the evidence shipper on the head's socket and the rollout controller.
An endpoint serves the tests' small scikit-learn model (tests/support/mlflow_models.py); its candidate is the
slow-on-rare model of tests/integration/test_rollout_local.py (40× slower when x1 > 5), in canary 50 %. The
controller (`Rollouts.check()` with the LocalRollouts backend, an S3 client of SeaweedFS, an audit log on SQLite)
runs every `check_every_seconds` from a thread; one client thread sends two-row requests, every 5th with the rare
input. Measured from the arrival of the first slow answer of the candidate to the first request after which every
answer came from the champion (and to the controller's rollback applied), with the catalog's defaults (check 15 s,
flush 10 s) and a fast setting (check 2 s, flush 1 s), `--runs` times each. The issue's goal: within two minutes.

Everything started is stopped at the end (also on errors, Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from serving import (  # noqa: E402  (bench/serving.py)
    start_mlflow_server,
    stop,
    table,
    wait_for_prediction,
)

from hub_config.catalog import DEFAULT_CATALOG  # noqa: E402
from hub_config.local import seaweedfs  # noqa: E402
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing  # noqa: E402
from mlplatform.serving.rollout import SIDE_HEADER, Rollout  # noqa: E402
from mlplatform.serving.inference_log import InferenceLog, S3Writer  # noqa: E402
from mlplatform.serving.spec import serving_request  # noqa: E402
from mlplatform_core.catalog import load_catalog  # noqa: E402
from mlplatform_core.contract import PlatformEnvironment  # noqa: E402
from mlplatform_service.audit_log import AuditLog  # noqa: E402
from mlplatform_service.database import connect  # noqa: E402
from mlplatform_service.evidence import EvidenceShipper, evidence_prefix  # noqa: E402
from mlplatform_service.rollout_backends import LocalRollouts  # noqa: E402
from mlplatform_service.rollouts import Rollouts  # noqa: E402

from tests.integration.test_rollout_local import register_candidate  # noqa: E402
from tests.support.mlflow_models import SAMPLE_ROWS, register_model, unique_name  # noqa: E402
from tests.support.seaweedfs_server import seaweedfs_server  # noqa: E402

TEAM, REGION, BUCKET = "team-vision", "us-east-1", "platform"
ROLLBACK_GOAL = 120.0  # seconds: "rollback triggers within two minutes of SLO breach"
SLOW_MS = 100.0  # the candidate sleeps 200 ms on a rare input; anything else answers in a few ms
FAST = {"check": 2, "flush": 1.0}



def settle(backend: LocalServing, app: str, timeout: float = 300) -> None:
    """Until the endpoint runs (in a rollout: its candidate too, seen healthy by the gateway)."""
    deadline = time.monotonic() + timeout
    while (state := backend.status(app))["state"] != "running":
        if state["state"] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"{app} did not settle: {state}")
        time.sleep(0.5)


def open_shipper(socket_path: Path, s3, flush_seconds: float) -> EvidenceShipper:
    """The platform service's shipper on the head's evidence socket, flushing every `flush_seconds`."""
    def open_log(team: str) -> InferenceLog:
        return InferenceLog(S3Writer(s3, BUCKET, evidence_prefix("platform", team)), flush_seconds=flush_seconds)

    shipper = EvidenceShipper(socket_path, open_log)
    shipper.start()
    return shipper


# --- part 2: breach → traffic back on the champion ---------------------------------------------------

class Controller(threading.Thread):
    """The platform service's rollout controller: `rollouts.check()` every `every` seconds (a pass that
    runs long delays the next, as the service's PeriodicCallback skips ticks)."""

    def __init__(self, rollouts: Rollouts, every: float):
        super().__init__(daemon=True)
        self.rollouts, self.every, self.halt = rollouts, every, threading.Event()
        self.rollbacks: list[tuple[float, list]] = []  # (when the pass that rolled back ended, what it did)
        self.error: Exception | None = None

    def run(self):
        tick = time.monotonic() + random.uniform(0, self.every)  # the service's phase is anyone's
        while not self.halt.wait(max(0.0, tick - time.monotonic())):
            try:
                done = self.rollouts.check()
            except Exception as e:  # the bench's mistake, not the controller's: the run stops
                self.error = e
                return
            if done:
                self.rollbacks.append((time.monotonic(), done))
            while tick <= time.monotonic():
                tick += self.every


class RareClient(threading.Thread):
    """Two ordinary rows per request, every 5th with the rare input; answers: (sent, received, side, ms)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.halt, self.answers = url, threading.Event(), []

    def run(self):
        with requests.Session() as http:
            i = 0
            while not self.halt.is_set():
                rows = [{"x1": 6.0 if i % 5 == 0 else 0.1 + (i % 7) / 10, "x2": 0.5}, {"x1": 0.9, "x2": 0.1}]
                sent = time.monotonic()
                try:
                    r = http.post(self.url, json=rows, timeout=30)
                    side = r.headers.get(SIDE_HEADER) if r.status_code == 200 else f"HTTP {r.status_code}"
                except requests.RequestException as e:
                    side = type(e).__name__
                received = time.monotonic()
                self.answers.append((sent, received, side, (received - sent) * 1000))
                i += 1


def rollback_run(backend, rollouts, app, url, check_every: float, limit: float) -> dict:
    """One breach: canary 50 % with a fresh window, the controller and the client running, until the
    traffic has been on the champion for 3 s (or `limit` seconds passed)."""
    backend.set_rollout(app, Rollout(mode="canary", share=0.5, since=round(time.time(), 3)))
    settle(backend, app)
    controller, client = Controller(rollouts, check_every), RareClient(url)
    controller.start()
    client.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < limit and controller.is_alive():
            time.sleep(0.5)
            answers = list(client.answers)
            if controller.rollbacks and answers and answers[-1][2] == "champion":
                last_candidate = max((a[1] for a in answers if a[2] != "champion"), default=0.0)
                if time.monotonic() - last_candidate > 3:
                    break
    finally:
        client.halt.set()
        controller.halt.set()
        client.join(60)
        controller.join(120)
    if controller.error is not None:
        raise RuntimeError("the controller's pass failed") from controller.error
    answers = client.answers
    slow = [a for a in answers if a[2] == "candidate" and a[3] > SLOW_MS]
    others = [a for a in answers if a[2] not in ("champion", "candidate")]
    if not slow or not controller.rollbacks:
        return {"breach_to_rollback": None, "breach_to_champion": None, "failed": len(others),
                "requests": len(answers), "rolled_back": bool(controller.rollbacks)}
    breach = slow[0][1]
    last = max(i for i, a in enumerate(answers) if a[2] != "champion")
    back = answers[last + 1][0] if last + 1 < len(answers) else None
    reason = controller.rollbacks[0][1][0].get("reason", "")
    return {"breach_to_rollback": controller.rollbacks[0][0] - breach, "failed": len(others),
            "breach_to_champion": None if back is None else back - breach, "requests": len(answers),
            "rolled_back": True, "reason": reason}


# --- the table ----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=37000, help="MLflow: base + 500, the Ray head: "
                        "base + 600 .. base + 799, SeaweedFS: 8 free ports from base + 800")
    parser.add_argument("--runs", type=int, default=3, help="runs of each setting")
    parser.add_argument("--rollback-limit", type=float, default=240.0, help="seconds a breach run may take")
    args = parser.parse_args()

    catalog = load_catalog(DEFAULT_CATALOG)
    log_defaults = catalog.serving.inference_log.model_dump()
    default_check = catalog.promotion.live_gates.check_every_seconds
    mlflow_url = f"http://127.0.0.1:{args.port_base + 500}"
    for key in [k for k in os.environ if k.startswith(("JUPYTERHUB_", "MLPLATFORM_", "MLFLOW_"))]:
        del os.environ[key]  # the bench's own platform only (no hub: no GPU reservations, no audit reports)
    os.environ.update(MLFLOW_TRACKING_URI=mlflow_url)
    config = LocalRayConfig(port=args.port_base + 600, start_timeout=300)  # a busy machine starts it slowly
    head = LocalRayHead(config)
    backend = LocalServing(config, environment=PlatformEnvironment(team=TEAM, backend="local"), environ={})
    tmp = Path(tempfile.mkdtemp(prefix="mlplatform-bench-rollout-"))
    tracking, shipper = None, None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        with ExitStack() as stack:
            head.stop()
            shutil.rmtree(head.root, ignore_errors=True)
            (tmp / "seaweedfs").mkdir()
            s3_url, keys = stack.enter_context(seaweedfs_server(tmp / "seaweedfs", args.port_base + 800, REGION, BUCKET))
            s3 = seaweedfs.admin_client(s3_url, REGION, keys)
            tracking = start_mlflow_server(args.port_base + 500, tmp / "mlflow")
            name = unique_name("bench")
            v1 = register_model(mlflow_url, name)
            slow = register_candidate(mlflow_url, name, tmp)
            os.environ["MLFLOW_TRACKING_URI"] = mlflow_url  # MLflow unsets it when it restores its global URI
            body = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
            print(f"model {name}: version {v1.version}, and {slow} (slow on rare inputs)", file=sys.stderr)
            backend.deploy(serving_request(name="routed", model_uri=v1.uri), model_version=v1.version,
                           env={"MLFLOW_TRACKING_URI": mlflow_url}, secrets={}, owner={"user": "bench", "team": TEAM})
            settle(backend, "routed")
            routed = backend.status("routed")["predict_url"]
            wait_for_prediction(routed, body)
            backend.start_rollout("routed", model_version=slow, requested_uri=f"models:/{name}/{slow}",
                                  rollout=Rollout(mode="off"), inference_log=log_defaults)
            settle(backend, "routed")
            rollouts = Rollouts(catalog=lambda: catalog, audit=AuditLog(connect(f"sqlite:///{tmp / 'audit.db'}")),
                                promotions=None, backend=LocalRollouts.from_environ({"MLPLATFORM_RAY_PORT": str(config.port)}),
                                s3=lambda: s3)
            settings = {"catalog defaults": (default_check, log_defaults["flush_seconds"]),
                        "fast": (FAST["check"], FAST["flush"])}
            breaches: dict[str, list[dict]] = {k: [] for k in settings}
            for i in range(args.runs):
                for label, (every, flush) in settings.items():
                    shipper = open_shipper(config.evidence_socket, s3, flush)
                    try:
                        run = rollback_run(backend, rollouts, "routed", routed, every, args.rollback_limit)
                    finally:
                        shipper.close(timeout=30)
                    breaches[label].append(run)
                    print(f"run {i + 1}: {label}: breach → champion {run['breach_to_champion']} s "
                          f"({run['requests']} requests, {run['failed']} failed)", file=sys.stderr)
        report(args, breaches, settings, head)
    finally:
        if shipper is not None:
            shipper.close(timeout=5)
        head.stop()
        shutil.rmtree(head.root, ignore_errors=True)
        stop(tracking)
        shutil.rmtree(tmp, ignore_errors=True)
        left = head.processes()
        if left:
            print(f"processes left: {left}", file=sys.stderr)


def report(args, breaches, settings, head) -> None:
    machine = (f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; Ray fast ingress (HAProxy): "
               f"{head.config.fast_ingress}; one replica per side (1 CPU), max batch size 32")
    rows = []
    for label, (every, flush) in settings.items():
        runs = breaches[label]
        def times(key):
            return [r[key] for r in runs if r[key] is not None]
        back, applied = times("breach_to_champion"), times("breach_to_rollback")
        missed = len(runs) - len(back)
        worst = max(back) if back else float("nan")
        rows.append((label, f"{every:g} s", f"{flush:g} s",
                     f"{statistics.median(applied):.1f} / {max(applied):.1f}" if applied else "–",
                     f"{statistics.median(back):.1f} / {worst:.1f}" if back else "–",
                     ", ".join(f"{t:.1f}" for t in back) + (f" (+{missed} not back in {args.rollback_limit:g} s)"
                                                           if missed else ""),
                     "yes" if back and not missed and worst <= ROLLBACK_GOAL else "no",
                     str(sum(r["failed"] for r in runs))))
    print(f"SLO breach → traffic back on the champion: canary 50 % of a candidate 40× slower on rare inputs, "
          f"{args.runs} runs per setting\n")
    table(("setting", "check every", "flush", "→ rollback applied, median / max s", "→ all answers from the "
           "champion, median / max s", "each run (s)", f"within {ROLLBACK_GOAL:.0f} s", "failed requests"), rows)
    reasons = {r.get("reason") for v in breaches.values() for r in v if r.get("reason")}
    print(f"\nFrom the arrival of the candidate's first slow answer; the controller is Rollouts.check() in a thread of "
          f"this process (LocalRollouts, SeaweedFS, SQLite audit), at a random phase; the evidence through the head's "
          f"gateway and a shipper in this process. {machine}.")
    if reasons:
        print(f"A rollback's reason, e.g.: {sorted(reasons)[0]}")


if __name__ == "__main__":
    main()
