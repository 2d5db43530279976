"""Where the seconds of a deploy go: `serving.deploy()` → first successful POST /predict, phase by phase.

    .venv/bin/python bench/deploy_steps.py --port-base 57000 --runs 5

Starts an MLflow server (as bench/serving.py does) and registers the tests' small scikit-learn model,
starts the local Ray head as `mlplatform-local up` does (`mlplatform-ray-head start`: `LocalRayHead.ensure()`
then Serve's start; timing when GCS and Serve's REST API first answer), then deploys the model `--runs + 1` times, each under a new
name, deleting it afterwards: the first deploy once `mlplatform-ray-head start` would have returned (Serve
started and the warm spare running: what the local platform's start does in the background), then deploys on
a started head, each once the warm spare runs (local.py; the wait is reported; with
MLPLATFORM_RAY_WARM_SPARE=0 every deploy starts its own replica, as before issue 13). Each deploy is timed
by phase:

  client      the API's own steps, timed by wrapping them in this process: require_mlflow (health
              probe), resolve (registry lookup), head.ensure, the Serve config PUT (`_apply`), the
              status read that deploy() answers with
  controller  from the PUT to the controller's "Adding 1 replica" (app build task, deployment
              registration), from Serve's controller log under the head's session directory
  replica     worker process: when the replica's process started (its /proc start time: before the
              deploy means the spare's process was taken over); ready: Serve's "started successfully", or
              for a taken-over spare its "took over as" line (secrets + mlflow.pyfunc.load_model)
  CPU         of every process of the head from deploy() to the first answer (what the deploy cost)
  spare       how long the spare took to run before the deploy, its replica's RSS and CPU at start
  running     when `serving.status()` (polled every 0.05 s here) first says running
  answer      the first successful POST /predict (polled every 0.05 s)

`--imports` also times, in fresh processes, what a replica's initialisation costs alone: importing the
app module, `mlflow.pyfunc`, and loading the model from MLflow.

Everything started is stopped at the end.

Findings with the warm spare (issue 13, 2026-12-03 18:00; 2 cores shared with other sessions, load average
6-14; the same bench back to back, with and without the spare, 3 runs each, medians (min-max)):

  | | with the spare | MLPLATFORM_RAY_WARM_SPARE=0 (as before) |
  |---|---|---|
  | deploy → first answer, started platform | 1.18 s (1.03-1.26) | 28.8 s (27.6-29.1) |
  | CPU-s of Ray's processes in that time | 0.83 (0.76-1.05) | 16.7 (15.3-17.5) |
  | first deploy right after Serve's start | 20.8 s, 16.8 CPU-s | 35.3 s, 18.6 CPU-s |
  | Ray's RSS after the deploys | 1526 MB, 13 processes | 1327 MB, 11 processes |

  (Earlier today, load ≈ 9, HEAD before this change: 13.7 s (13.6-16.0) warm with 8.2 CPU-s in the replica,
  17.6 s first.) A deploy on the spare is: deploy() 0.35 s (registry lookup 0.1-0.2, PUT 0.04), Serve
  reconfigures the spare's replica (new route prefix and user_config: no build task, no new process) and
  its `reconfigure` loads the model, ~0.5 CPU-s; running ~1.0 s after deploy(), the first answer 0.1 s later.
  The goal (≤ 5 s on a started platform) is met by a wide margin, whatever the load.
  * The spare costs one process: 344 MB RSS (ray + Serve + mlflow.pyfunc + sklearn + skops imported; ~150 MB
    of it sklearn/skops/scipy, which make a take-over ~4 CPU-s cheaper), 8.4-9.1 CPU-s to start plus ~2.5
    CPU-s of Serve's build task for its application, spent in the background: the deploying process starts
    the next spare once its deployment runs (10-14 s here until it runs, under this load).
  * The first deploy right after Serve's start takes over the spare while it is still importing, so it
    waits for the rest of that start: 20.8 s here (16.8 CPU-s: the spare's build and imports + the load), not
    better than a fresh replica's CPU. The ≤ 10 s goal for the first deploy is met only when the spare has had
    its ~11 CPU-s (≈ 6-8 s on a quiet 2-core machine; `mlplatform-ray-head start` starts it with Serve, at
    the platform's start, while the user logs in and starts a server): not met for a deploy in the first
    seconds after the head's start on a loaded machine.
  * Not taken over (they start their own replicas, as before): GPU replicas, CPUs per replica other than
    the spare's 1, autoscaling, a new version of an existing endpoint (new args: surge, the old version
    answering), a rollout's candidate.
  * Weighed and not built: Ray's worker prestart + a `worker_process_setup_hook` (Ray pools workers per job
    and runtime_env; Serve's replicas are actors the controller creates with each deployment's runtime_env,
    and Serve's build task would still take a fresh worker, ~2.5 CPU-s); RAY_preload_python_modules (see
    below); a cheaper skops import (skops.io._trusted_types imports every sklearn estimator module, 1.1 s).

Findings before the warm spare (issue 13, 2026-12-03; load average 7-19, so wall seconds are 2-4x what an idle
machine shows; CPU seconds do not depend on the load):

  * The client side is small: MLflow probe 0.01 s, registry lookup 0.1-0.2 s, the Serve config PUT
    0.05-0.1 s on a started Serve (9.3 s when the PUT had to start Serve's controller and proxy: now done
    by `mlplatform-ray-head start`, i.e. at platform start), deploy() returns in 0.4-1.1 s.
  * Serve's controller: PUT → app build 0.02 s; the build itself runs in a new worker (Serve's build task
    has max_calls=1, so no worker is ever reused for it): import ray + ray.serve + the app ≈ 2.5 s CPU,
    4-8 s wall here; built → replica added 0.2 s.
  * The replica is a new worker process (Ray starts it together with the build's, so it is up before the
    replica is added) that then spends ≈ 9 s CPU: import ray 0.8, ray.serve 1.5, the app 0.2,
    mlflow.pyfunc 1.5, load_model 4.9 (import sklearn 1.8, skops.io 2.3 — MLflow 3 saves sklearn models
    with skops, whose import scans sklearn's public types —, artifact download 0.2), first predict 0.03.
    MLflow's check of the model's requirements against the environment was 0.7 s CPU of it (now skipped,
    run only when a load fails).
  * Serve reports the replica RUNNING within 0.1 s of its constructor's end; `status()` then says
    running within one poll (0.1 s at first now, was 1 s), and the first POST /predict answers 0.1-0.6 s
    after (HAProxy learning the replica).
  * So the floor of a deploy with a fresh replica process is ≈ 12 s CPU on 2 cores (build and replica
    partly in parallel): ~7-9 s on an idle machine, 20-40 s under this load. The ≤ 5 s goal needs a replica
    that does not import ray.serve, MLflow, sklearn and skops afresh: a warm, pre-imported worker. Tried:
    Ray's RAY_preload_python_modules (every Python worker imports the list before taking work) — it applies
    to Serve's controller and proxies too, Serve's start timed out under load (HAProxyManager killed), and
    each system actor would carry MLflow and sklearn. Left: a warm spare for replicas only (e.g. a
    `worker_process_setup_hook` in the deployments' runtime_env plus Ray's worker prestart, with the same
    runtime_env for every application so the pool matches), weighed against the head's memory.
  * The head: GCS 2.4 s, dashboard 18 s, Serve REST 31 s (load 7); ~1.0-1.3 GB in 11 processes idle, of
    which `ray start --block` itself (a waiting Python process) ~210 MB, Serve's controller, proxy and
    HAProxy manager ~210 MB each. The autoscaler monitor (~85 MB) and the log monitor (~80 MB) are no longer
    started; neither is Ray's dashboard (Serve's controller serves Serve's REST API instead, serve_api.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from serving import start_mlflow_server, stop  # noqa: E402  (bench/serving.py)

from mlplatform import serving  # noqa: E402
from mlplatform.serving import api, head_cli, local  # noqa: E402
from mlplatform.serving.local import LocalRayConfig, LocalRayHead  # noqa: E402

from tests.support.mlflow_models import SAMPLE_ROWS, register_model, unique_name  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
BOOT = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


# --- timing helpers ---------------------------------------------------------------------------------

class Clock:
    """Wall-clock marks of one deploy (time.time(), to compare with Ray's log lines)."""

    def __init__(self):
        self.marks: dict[str, float] = {}
        self.spans: dict[str, float] = {}

    def wrap(self, owner, attribute: str, label: str):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            started = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans[label] = self.spans.get(label, 0.0) + time.time() - started
                self.marks.setdefault(f"{label} start", started)
                self.marks[f"{label} end"] = time.time()
        setattr(owner, attribute, timed)
        return lambda: setattr(owner, attribute, original)


def process_start(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return BOOT + int(fields[19]) / TICKS


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of `pid` so far (the cost of its start on an idle machine; not its wait)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def log_time(line: str) -> float | None:
    match = LOG_TIME.search(line)
    if not match:
        return None
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def serve_logs(head: LocalRayHead) -> Path:
    return head.config.ray_directory / "session_latest" / "logs" / "serve"


def controller_marks(head: LocalRayHead, app: str, since: float = 0.0) -> dict[str, float]:
    """Times of the controller's lines about `app` from `since` on: replica added, started; its pid (a taken-over
    spare's from before), and when a taken-over replica had its model (its own log's "took over" line)."""
    marks: dict[str, float] = {}
    for path in serve_logs(head).glob("controller_*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if f"app='{app}'" not in line and f"'{app}'" not in line:
                continue
            t = log_time(line)
            if t is None:
                continue
            pid = re.search(r"PID: (\d+)", line)
            if pid and "started successfully" in line:
                marks["pid"] = int(pid[1])
            if t < since:
                continue
            if "Adding 1 replica" in line:
                marks.setdefault("replica added", t)
            elif "started successfully" in line:
                marks.setdefault("replica started", t)
                pid = re.search(r"PID: (\d+)", line)
                if pid:
                    marks["pid"] = int(pid[1])
            elif "Importing and building app" in line:
                marks.setdefault("app build", t)
            elif "Imported and built app" in line:
                marks.setdefault("app built", t)
    for path in serve_logs(head).glob(f"replica_{app}_*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if "took over as" in line and (t := log_time(line)) is not None and t >= since:
                marks.setdefault("replica started", t)
    return marks


# --- one deploy ---------------------------------------------------------------------------------------

def head_cpu(head: LocalRayHead) -> float:
    """CPU seconds so far of every live process of the head (Ray's, Serve's, replicas, spares)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in head.processes())


def wait_for_spare(head: LocalRayHead, timeout: float = 180) -> dict[str, float]:
    """Until the warm spare's replica runs; how long that took, its process's RSS and CPU so far."""
    backend = local.LocalServing(head.config)
    if not backend.warm_spare:  # MLPLATFORM_RAY_WARM_SPARE=0: deploys start their own replicas (as before issue 13)
        return {}
    started = time.time()
    ok = localhost_wait(lambda: (backend.spare() or {}).get("status") == "RUNNING", timeout)
    spare = backend.spare() or {}
    pids = spare.get("pids") or []
    return {"spare: waited for it to run before the deploy": time.time() - started if ok else float("nan"),
            "spare: its replica's RSS (MB)": rss_mb(pids) if pids else float("nan"),
            "spare: its replica's CPU seconds at start (imports)":
                sum(cpu_seconds(p) or 0 for p in pids) or float("nan")}


def deploy_once(head: LocalRayHead, name: str, model_uri: str, body: bytes, *,
                wait_spare: bool = True) -> dict[str, float]:
    spare = wait_for_spare(head) if wait_spare else {}
    clock = Clock()
    undo = [clock.wrap(api, "require_mlflow", "mlflow probe"), clock.wrap(api, "resolve", "registry lookup"),
            clock.wrap(LocalRayHead, "ensure", "head.ensure"), clock.wrap(local.LocalServing, "_apply", "config PUT"),
            clock.wrap(local.LocalServing, "status", "status read")]
    seen: dict[str, float] = {}
    stop_polls = threading.Event()

    def poll_status():
        while not stop_polls.is_set():
            try:
                state = serving.status(name)["state"]
                seen.setdefault(state, time.time())
            except Exception:  # noqa: BLE001 — not there yet
                pass
            time.sleep(0.05)

    cpu_before = head_cpu(head)
    started = time.time()
    try:
        status = serving.deploy(name, model_uri)
    finally:
        for u in undo:
            u()
    returned = time.time()
    poller = threading.Thread(target=poll_status, daemon=True)
    poller.start()
    url = status["predict_url"]
    answered = None
    while time.time() - started < 180:
        try:
            if requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10).ok:
                answered = time.time()
                break
        except requests.RequestException:
            pass
        time.sleep(0.05)
    localhost_wait(lambda: "running" in seen, 30)
    stop_polls.set()
    poller.join()
    cpu_during = head_cpu(head) - cpu_before  # (a process that ended in between is not counted)
    if answered is None:
        raise TimeoutError(f"{name} did not answer within 180 s")
    serve_name = json.loads((head.root / "apps" / f"{name}.json").read_text())["application"]["name"]
    marks = controller_marks(head, serve_name, since=started)
    pid_start = process_start(int(marks["pid"])) if "pid" in marks else None
    replica_cpu = cpu_seconds(int(marks["pid"])) if "pid" in marks else None
    put = clock.marks.get("config PUT start", started)
    nan = float("nan")
    row = {
        "client: mlflow probe": clock.spans.get("mlflow probe", 0),
        "client: registry lookup": clock.spans.get("registry lookup", 0),
        "client: head.ensure": clock.spans.get("head.ensure", 0),
        "client: config PUT": clock.spans.get("config PUT", 0),
        "client: status read": clock.spans.get("status read", 0),
        "client: deploy() returned": returned - started,
        "controller: PUT → app build starts": marks.get("app build", nan) - put,
        "controller: app build (import in a worker)": marks.get("app built", nan) - marks.get("app build", nan),
        "controller: built → replica added": marks.get("replica added", nan) - marks.get("app built", nan),
        "replica: added → its process started": (pid_start or nan) - marks.get("replica added", nan),
        "replica: process start → ready (imports, load)": marks.get("replica started", nan) - (pid_start or nan),
        "replica: CPU seconds until it answered (load-independent)": replica_cpu if replica_cpu is not None else nan,
        "replica process reused (1) / new (0)": float(pid_start is not None and pid_start < put),
        "Ray's processes: CPU seconds from deploy() to the first answer": cpu_during,
        "controller: replica ready (from start)": marks.get("replica started", nan) - started,
        "status says running (from start)": seen.get("running", float("nan")) - started,
        "first answer (from start)": answered - started,
        **spare,
    }
    serving.delete(name)
    return row


def localhost_wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def head_start(head: LocalRayHead) -> dict[str, float]:
    """`ensure()` with a thread noting when GCS and the Serve REST API (served by Serve's controller) first answer."""
    import socket

    seen: dict[str, float] = {}
    done = threading.Event()
    c = head.config

    def watch():
        while not done.is_set():
            if "GCS port open" not in seen:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", c.port)) == 0:
                        seen["GCS port open"] = time.time()
            if "Serve REST API listens" not in seen:
                try:
                    if requests.get(f"{c.dashboard_url}/api/ray/version", timeout=1).status_code < 500:
                        seen["Serve REST API listens"] = time.time()
                except requests.RequestException:
                    pass
            time.sleep(0.1)

    started = time.time()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    head.ensure()
    seen["Serve REST answers (ensure returned)"] = time.time()
    serving = local.LocalServing(head.config)
    serving.start_serve()  # as `mlplatform-ray-head start` does, which then waits for the spare (head_cli)
    seen["Serve controller and proxy up"] = time.time()
    if serving.warm_spare and serving.wait_for_spare(head_cli.SPARE_WAIT):
        seen["the warm spare runs (`mlplatform-ray-head start` returns)"] = time.time()
    done.set()
    watcher.join()
    return {f"head: {k}": v - started for k, v in seen.items()}


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


# --- a replica's initialisation, alone --------------------------------------------------------------

IMPORT_PROBE = """
import os, sys, json
cpu = lambda: sum(os.times()[:2])  # CPU seconds: what a step costs on an idle machine, whatever the load now
marks = [("start", cpu())]
import ray
marks.append(("import ray (a worker's own start)", cpu()))
import ray.serve
marks.append(("import ray.serve", cpu()))
import mlplatform.serving.app
marks.append(("import mlplatform.serving.app (after ray.serve)", cpu()))
import mlflow.pyfunc
marks.append(("import mlflow.pyfunc (after the app)", cpu()))
m = mlflow.pyfunc.load_model(sys.argv[1], suppress_warnings=True)
marks.append(("load_model (downloads, imports the flavor, unpickles)", cpu()))
m.predict(__import__('pandas').DataFrame([{"x1": 0.1, "x2": 1.0}]))
marks.append(("first predict", cpu()))
print(json.dumps({b[0]: b[1] - a[1] for a, b in zip(marks, marks[1:])}))
"""


def import_costs(model_uri: str, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, model_uri], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(REPO / "extensions")}).stdout
        total = time.perf_counter() - started
        for k, v in {**json.loads(out.strip().splitlines()[-1]), "whole process (wall, under the load now)": total}.items():
            results.setdefault(k, []).append(v)
    return results


def table(title: str, rows: list[dict[str, float]]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(f"\n{title}")
    width = max(len(k) for k in keys)
    print(f"| {'phase'.ljust(width)} | median s | min | max | runs |")
    print(f"|{'-' * (width + 2)}|----------|-----|-----|------|")
    for k in keys:
        values = [r[k] for r in rows if k in r and r[k] == r[k]]
        if values:
            print(f"| {k.ljust(width)} | {statistics.median(values):8.2f} | {min(values):.2f} | {max(values):.2f} | "
                  f"{len(values)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=57000, help="MLflow: base + 500, the Ray head: base + 600 ..")
    parser.add_argument("--runs", type=int, default=5, help="warm deploys (after the first one)")
    parser.add_argument("--imports", type=int, default=0, help="also time a replica's imports and load alone, N times")
    parser.add_argument("--keep-head", action="store_true", help="reuse a running head (no head start timing)")
    args = parser.parse_args()

    mlflow_url = f"http://127.0.0.1:{args.port_base + 500}"
    os.environ.update(MLPLATFORM_BACKEND="local", MLPLATFORM_RAY_PORT=str(args.port_base + 600),
                      MLFLOW_TRACKING_URI=mlflow_url)
    head = LocalRayHead(LocalRayConfig.from_environ())
    body = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
    tmp = Path(tempfile.mkdtemp(prefix="mlplatform-bench-steps-"))
    tracking = None
    try:
        head.stop()
        shutil.rmtree(head.root, ignore_errors=True)
        tracking = start_mlflow_server(args.port_base + 500, tmp / "mlflow")
        model = register_model(mlflow_url, unique_name("steps"))
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_url
        if args.imports:
            table(f"a replica's initialisation alone: CPU seconds (fresh processes, {args.imports} runs)",
                  _columns(import_costs(model.uri, args.imports)))
        start = head_start(head)
        idle = rss_mb(head.processes()), len(head.processes())
        first = deploy_once(head, "steps-first", model.uri, body, wait_spare=False)
        table("head start", [start])
        table("first deploy after the head's start", [first])
        warm = [deploy_once(head, f"steps-{i}", model.uri, body) for i in range(args.runs)]
        table(f"deploys on a started head (median of {args.runs})", warm)
        print(f"\nRay: idle after start {idle[0]:.0f} MB RSS in {idle[1]} processes; after the deploys "
              f"{rss_mb(head.processes()):.0f} MB in {len(head.processes())} processes")
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        head.stop()
        shutil.rmtree(head.root, ignore_errors=True)
        stop(tracking)
        shutil.rmtree(tmp, ignore_errors=True)
        if head.processes():
            print(f"processes left: {head.processes()}", file=sys.stderr)


def _columns(results: dict[str, list[float]]) -> list[dict[str, float]]:
    n = len(next(iter(results.values())))
    return [{k: v[i] for k, v in results.items()} for i in range(n)]


if __name__ == "__main__":
    main()
