"""Safe-rollout benchmark (issue 12): what routing and the inference log cost an endpoint, and how soon a
breaching canary's traffic is back on the champion.

    .venv/bin/python bench/rollout.py --port-base 37000 --runs 3 --duration 10 --connections 8

One MLflow server (SQLite, `--workers 1`), one throwaway SeaweedFS (the team's S3 prefix), one local Ray
head. The small scikit-learn model of the tests (tests/support/mlflow_models.py) is registered twice, so
champion and candidate are the same fast model and the numbers show routing and logging, not models:

  1. Throughput, p50/p99 latency and requests per CPU-second of the Ray head's processes (bench/serving.py's
     load client and accounting: `--connections` keep-alive connections, one row per request, for
     `--duration` seconds), for
       single          the endpoint of today: one model, no candidate (its own application)
       off             an application in rollout with mode off (router present, candidate idle)
       shadow          every request also sent to the candidate (mirror_rate 1), callers get the champion's
       canary 5 %      5 % of the requests answered by the candidate
     shadow and canary each with the inference log off and on. "On" is the catalog's
     `serving.inference_log` (every request, both sides, Parquet to SeaweedFS); "off" is the serving
     backend's `set_inference_log(name, None)` (the router then opens no log), a change in place like the
     mode's, no replica restarts. (The bench drives the serving backend itself: the platform service would
     refuse the log off in shadow or canary, where its live gates need the records.) Each of `--runs` runs
     measures every configuration, in an order of its own (none always follows the same one), after
     `--settle` seconds of load on the new settings; medians, with the spread of requests/s.
     `--skip-rollback`: part 1 only.
  2. Time from SLO breach to traffic back on the champion: version 3, the slow-on-rare candidate of
     tests/integration/test_rollout_local.py (40× slower when x1 > 5), in canary 50 %; the platform
     service's controller (`Rollouts.check()` with the LocalRollouts backend, an S3 client of SeaweedFS,
     an audit log on SQLite) called every `check_every_seconds` from a thread; one client thread sends
     two-row requests, every 5th with the rare input. Measured from the arrival of the first slow answer
     of the candidate to the first request after which every answer came from the champion (and to the
     controller's rollback applied), with the catalog's defaults (check 15 s, flush 10 s) and a fast
     setting (check 2 s, flush 1 s), `--runs` times each. The issue's goal: within two minutes.

Everything started is stopped at the end (also on errors, Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
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
    load,
    measured,
    start_mlflow_server,
    stop,
    table,
    wait_for_prediction,
)

from hub_config.catalog import DEFAULT_CATALOG  # noqa: E402
from hub_config.local import seaweedfs  # noqa: E402
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing  # noqa: E402
from mlplatform.serving.rollout import SIDE_HEADER, Rollout  # noqa: E402
from mlplatform.serving.router import MAX_MIRRORS  # noqa: E402
from mlplatform.serving.spec import serving_request  # noqa: E402
from mlplatform_core.catalog import load_catalog  # noqa: E402
from mlplatform_core.contract import PlatformEnvironment  # noqa: E402
from mlplatform_service.audit_log import AuditLog  # noqa: E402
from mlplatform_service.database import connect  # noqa: E402
from mlplatform_service.rollout_backends import LocalRollouts  # noqa: E402
from mlplatform_service.rollouts import Rollouts  # noqa: E402

from tests.integration.test_rollout_local import register_candidate  # noqa: E402
from tests.support.mlflow_models import SAMPLE_ROWS, register_model, unique_name  # noqa: E402
from tests.support.seaweedfs_server import seaweedfs_server  # noqa: E402

TEAM, REGION, BUCKET = "team-vision", "us-east-1", "platform"
PREFIX = f"teams/{TEAM}/"  # the catalog's team_prefix for TEAM
GOAL_SHARE = 0.15  # the issue: routing + logging cost at most 15 % of throughput
ROLLBACK_GOAL = 120.0  # seconds: "rollback triggers within two minutes of SLO breach"
SLOW_MS = 100.0  # the candidate sleeps 200 ms on a rare input; anything else answers in a few ms
FAST = {"check": 2, "flush": 1.0}

# (label, rollout or None: the single-model application, inference log on)
CONFIGS = [("single (today)", None, False),
           ("rollout, mode off", Rollout(mode="off"), False),
           ("shadow, log off", Rollout(mode="shadow"), False),
           ("shadow, log on", Rollout(mode="shadow"), True),
           ("canary 5 %, log off", Rollout(mode="canary", share=0.05), False),
           ("canary 5 %, log on", Rollout(mode="canary", share=0.05), True)]


# --- the endpoints -----------------------------------------------------------------------------------

def health(url: str) -> dict:
    return requests.get(url.replace("/predict", "/health"), timeout=30).json()


def configure(backend: LocalServing, app: str, url: str, settings: Rollout, log: dict | None) -> None:
    """The rollout `settings` and the inference log (`log`; None: no `inference_log` key) as the champion's
    user_config, applied in place; returns once the champion's replica runs with them."""
    if (backend.status(app)["rollout"] or {}).get("inference_log") != log:  # each change reloads the proxy
        backend.set_inference_log(app, log)
    backend.set_rollout(app, settings)
    deadline = time.monotonic() + 120
    while True:
        info = health(url).get("rollout") or {}
        logging = info.get("inference_log") is not None
        if (info.get("mode"), info.get("share"), logging, info.get("since")) == (
                settings.mode, settings.share, log is not None, settings.since):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{app} did not take {settings} (inference log {'on' if log else 'off'}): {info}")
        time.sleep(0.2)


def settle(backend: LocalServing, app: str, deployments: int, timeout: float = 300) -> None:
    """Until the application runs with `deployments` deployments, all healthy."""
    deadline = time.monotonic() + timeout
    while True:
        state = backend.status(app)
        found = backend._serve_status().get(app, {}).get("deployments", {})
        if state["state"] == "running" and len(found) == deployments and \
                all(d["status"] == "HEALTHY" for d in found.values()):
            return
        if state["state"] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"{app} did not settle: {state}")
        time.sleep(0.5)


CLOSED = (asyncio.IncompleteReadError, ConnectionError)  # the load client's connection closed by the ingress


def after_change(url: str, body: bytes, connections: int, limit: float = 60) -> int:
    """Load until one second of it passes with no connection closed (Serve reloads HAProxy after a change of
    the application, and the old HAProxy closes its keep-alive connections); answers how many closed."""
    deadline, closed = time.monotonic() + limit, 0
    while True:
        try:
            load(url, body, connections, 1)
            return closed
        except CLOSED:
            closed += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def log_counts(url: str) -> dict:
    info = health(url).get("rollout") or {}
    return {"recorded": 0, "dropped": 0, "mirrors_skipped": info.get("mirrors_skipped", 0),
            **(info.get("inference_log") or {})}


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


def rollback_run(backend, rollouts, app, url, check_every: float, log: dict, limit: float) -> dict:
    """One breach: canary 50 % with a fresh window, the controller and the client running, until the
    traffic has been on the champion for 3 s (or `limit` seconds passed)."""
    configure(backend, app, url, Rollout(mode="canary", share=0.5, since=round(time.time(), 3)), log)
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
    parser.add_argument("--runs", type=int, default=3, help="runs of each configuration (part 1) and of each "
                        "setting (part 2)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run (part 1)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rollback-limit", type=float, default=240.0, help="seconds a breach run may take")
    parser.add_argument("--skip-throughput", action="store_true", help="part 2 only")
    parser.add_argument("--skip-rollback", action="store_true", help="part 1 only")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of load after each change before it is "
                        "measured (the previous settings' work, e.g. a closing inference log, done first)")
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
    tracking = None
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
            v1, v2 = register_model(mlflow_url, name), register_model(mlflow_url, name)
            slow = register_candidate(mlflow_url, name, tmp)
            os.environ["MLFLOW_TRACKING_URI"] = mlflow_url  # MLflow unsets it when it restores its global URI
            env = {"MLFLOW_TRACKING_URI": mlflow_url, "MLPLATFORM_TEAM": TEAM, "MLPLATFORM_S3_ENDPOINT": s3_url,
                   "AWS_REGION": REGION, "MLPLATFORM_S3_BUCKET": BUCKET, "MLPLATFORM_S3_TEAM_PREFIX": PREFIX}
            secrets = {"AWS_ACCESS_KEY_ID": keys["s3_access_key"], "AWS_SECRET_ACCESS_KEY": keys["s3_secret_key"]}
            owner = {"user": "bench", "team": TEAM}
            body = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
            print(f"model {name}: versions {v1.version} and {v2.version} (the same fast model), {slow} (slow on rare "
                  f"inputs); {args.runs} runs × {args.duration:g} s, {args.connections} connections", file=sys.stderr)

            urls = {}
            for app in ("single", "routed"):
                backend.deploy(serving_request(name=app, model_uri=v1.uri), model_version=v1.version, env=env,
                               secrets=secrets, owner=owner)
                settle(backend, app, 1)
                urls[app] = backend.status(app)["predict_url"]
                wait_for_prediction(urls[app], body)
            routed = urls["routed"]
            backend.start_rollout("routed", model_version=v2.version, requested_uri=v2.uri,
                                  rollout=Rollout(mode="off"), inference_log=log_defaults)
            settle(backend, "routed", 2)
            wait_for_prediction(routed, body)
            print("endpoints up", file=sys.stderr)

            results: dict[str, list[dict]] = {label: [] for label, _, _ in CONFIGS}
            if not args.skip_throughput:
                load(urls["single"], body, args.connections, 2)  # warm-up of both applications
                load(routed, body, args.connections, 2)
                for i in range(args.runs):
                    # Each run in another order: a configuration is not always measured after the same one.
                    for label, settings, logging in random.Random(i).sample(CONFIGS, len(CONFIGS)):
                        url = urls["single"] if settings is None else routed
                        closed = 0
                        if settings is not None:
                            configure(backend, "routed", routed, settings, log_defaults if logging else None)
                            closed += after_change(url, body, args.connections)  # and the new settings' first requests
                            load(url, body, args.connections, args.settle)
                        for attempt in range(3):
                            before = log_counts(url) if settings is not None else {}
                            try:
                                result = measured(url, body, head.processes, args)
                                break
                            except CLOSED:  # a late reload of HAProxy: measured again
                                closed += 1
                                if attempt == 2:
                                    raise
                                after_change(url, body, args.connections)
                        result["closed"] = closed
                        if settings is not None:
                            after = log_counts(url)
                            result.update({k: after[k] - before[k] for k in ("recorded", "dropped", "mirrors_skipped")})
                        results[label].append(result)
                        print(f"run {i + 1}: {label}: {result['rps']:.0f} req/s", file=sys.stderr)

            settings = {"catalog defaults": (default_check, log_defaults["flush_seconds"]),
                        "fast": (FAST["check"], FAST["flush"])}
            breaches: dict[str, list[dict]] = {k: [] for k in settings}
            if not args.skip_rollback:
                # part 2: a new candidate (the slow one) in canary, rolled back by the controller
                backend.end_rollout("routed", promote=False)
                settle(backend, "routed", 1)
                backend.start_rollout("routed", model_version=slow, requested_uri=f"models:/{name}/{slow}",
                                      rollout=Rollout(mode="off"), inference_log=log_defaults)
                settle(backend, "routed", 2)
                wait_for_prediction(routed, body)
                rollouts = Rollouts(catalog=lambda: catalog, audit=AuditLog(connect(f"sqlite:///{tmp / 'audit.db'}")),
                                    promotions=None, backend=LocalRollouts.from_environ({"MLPLATFORM_RAY_PORT": str(config.port)}),
                                    s3=lambda: s3)
                for i in range(args.runs):
                    for label, (every, flush) in settings.items():
                        run = rollback_run(backend, rollouts, "routed", routed, every, {**log_defaults, "flush_seconds": flush},
                                           args.rollback_limit)
                        breaches[label].append(run)
                        print(f"run {i + 1}: {label}: breach → champion {run['breach_to_champion']} s "
                              f"({run['requests']} requests, {run['failed']} failed)", file=sys.stderr)

        report(args, results, breaches, settings, head)
    finally:
        head.stop()
        shutil.rmtree(head.root, ignore_errors=True)
        stop(tracking)
        shutil.rmtree(tmp, ignore_errors=True)
        left = head.processes()
        if left:
            print(f"processes left: {left}", file=sys.stderr)


def report(args, results, breaches, settings, head) -> None:
    machine = (f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; Ray fast ingress (HAProxy): "
               f"{head.config.fast_ingress}; one replica per deployment (1 CPU), max batch size 32")
    if results["single (today)"]:
        def med(label, key):
            return statistics.median(r[key] for r in results[label])

        base_rps, base_cpu = med("single (today)", "rps"), med("single (today)", "per_cpu_s")
        rows = []
        for label, settings_, logging in CONFIGS:
            runs = results[label]
            rps, per_cpu = med(label, "rps"), med(label, "per_cpu_s")
            spread = f"{min(r['rps'] for r in runs):.0f}–{max(r['rps'] for r in runs):.0f}"
            logged = "" if not logging else (f"{sum(r['recorded'] for r in runs):,} / "
                                             f"{sum(r['dropped'] for r in runs):,}")
            goal = "" if settings_ is None else ("yes" if rps / base_rps >= 1 - GOAL_SHARE else "no")
            rows.append((label, f"{rps:.0f}", spread, f"{rps / base_rps:.2f}", f"{med(label, 'p50_ms'):.1f}",
                         f"{med(label, 'p99_ms'):.1f}", f"{per_cpu:.0f}", f"{per_cpu / base_cpu:.2f}",
                         str(sum(r["errors"] for r in runs)), logged, goal))
        print(f"1. Routing and the inference log: median of {args.runs} runs × {args.duration:g} s, "
              f"{args.connections} connections, one row per request\n")
        table(("endpoint", "requests/s", "min–max", "÷ single", "p50 ms", "p99 ms", "req per CPU-s", "÷ single",
               "failed", "records logged / dropped", f"≥ {1 - GOAL_SHARE:.0%} of single"), rows)
        skipped = sum(r.get("mirrors_skipped", 0) for r in results["shadow, log on"] + results["shadow, log off"])
        closed = sum(r.get("closed", 0) for runs in results.values() for r in runs)
        print(f"\n{machine}; CPU-seconds of every process of the Ray head; shadow mirrors skipped (over "
              f"{MAX_MIRRORS} in flight): {skipped}; load-client connections closed by the ingress after a "
              f"change of the rollout (before measuring; the load retried): {closed}\n")

    if args.skip_rollback:
        return
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
    print(f"2. SLO breach → traffic back on the champion: canary 50 % of a candidate 40× slower on rare inputs, "
          f"{args.runs} runs per setting\n")
    table(("setting", "check every", "flush", "→ rollback applied, median / max s", "→ all answers from the "
           "champion, median / max s", "each run (s)", f"within {ROLLBACK_GOAL:.0f} s", "failed requests"), rows)
    reasons = {r.get("reason") for v in breaches.values() for r in v if r.get("reason")}
    print(f"\nFrom the arrival of the candidate's first slow answer; the controller is Rollouts.check() in a thread of "
          f"this process (LocalRollouts, SeaweedFS, SQLite audit), at a random phase. {machine}.")
    if reasons:
        print(f"A rollback's reason, e.g.: {sorted(reasons)[0]}")


if __name__ == "__main__":
    main()
