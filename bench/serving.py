"""Serving benchmark: the platform's Ray Serve path against `mlflow models serve` at its best, same model, same client.

    .venv/bin/python bench/serving.py --port-base 58000 --runs 3 --duration 10 --connections 8

Starts an MLflow server (SQLite, `--workers 1`, as the local platform does), registers the small
scikit-learn model of the tests (tests/support/mlflow_models.py; with its signature, as promotion
requires), then, in each of `--runs` runs:

  Ray, cold       stop the Ray head, `mlplatform.serving.deploy()` with batching (`--max-batch-size`):
                  deploy → first successful prediction, the head starting too (a user's first deploy)
  Ray, warm       a second application with `max_batch_size=1` (no batching), the head up
  mlflow -w N     `mlflow models serve -w N` for each of `--mlflow-workers` (default 1, 2, 4): process
                  start → first successful prediction; then its load run; then it is stopped
  load runs       Ray with batching, Ray without, each mlflow worker count: requests/s, p50/p99 and
                  requests per CPU-second of the server's own processes

CPU-seconds are utime + stime from /proc over the load run, of every process of the server:
`mlflow models serve` = its process group (the mlflow CLI, the uvicorn master and its workers); Ray = every
process of the head (GCS, raylet, dashboard, Serve controller, proxy, HAProxy, replicas) except the
replica of the other application, which idles meanwhile. The Ray breakdown by process kind is printed
too (stderr), so it shows where the CPU goes. The load client is the same for every server:
`--connections` keep-alive HTTP/1.1 connections, each sending one row (`{"dataframe_records": [...]}`,
a body both accept) as soon as the previous answer came, for `--duration` seconds; it runs on the same
machine, and its own CPU is shown (it competes with the servers for cores on a small machine).

The best mlflow configuration is the one with the most requests per CPU-second (median over runs); the
ratio rows compare against it, and against the fastest mlflow in requests/s. Each figure is the median
over runs with the spread (min–max). Both servers enforce the model's signature: a body with a word for a
float column must get 400 from each, checked in every run. The goal line (≥ 2× requests per CPU-second
over the best mlflow, p99 ≤ 30 ms) says plainly whether it is met. Everything started is stopped at the
end (also on errors and Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlplatform import localhost, serving  # noqa: E402
from mlplatform.serving.local import LocalRayConfig, LocalRayHead, LocalServing  # noqa: E402

from tests.support.mlflow_models import SAMPLE_ROWS, register_model, unique_name  # noqa: E402

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


# --- the load client ---------------------------------------------------------------------------------

async def _connection(host: str, port: int, request: bytes, until: float, latencies: list, errors: list) -> None:
    reader = writer = None
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError) as e:  # the server closed the connection: a failure
                errors.append(type(e).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(status)
    finally:
        if writer is not None:
            writer.close()


def load(url: str, body: bytes, connections: int, duration: float) -> dict:
    """Closed-loop load: `connections` clients, each waiting for its answer before the next request."""
    host, _, rest = url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    request = (f"POST /{path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors: list[int] = []

    async def run():
        until = time.perf_counter() + duration
        await asyncio.gather(*(_connection(host, int(port), request, until, latencies, errors)
                               for _ in range(connections)))

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "errors": len(errors), "rps": len(latencies) / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan")}


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError):
            pass
    return total / TICKS


def group_pids(pgid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    found.append(int(proc.name))
            except (OSError, IndexError):
                pass
    return found


def process_kind(pid: int) -> str:
    """What a process of a server is, from its command line (Ray names its worker processes ray::<actor>)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0]  # ray::ServeReplica:<app>:<deployment>, ray::ProxyActor, ...
    name = Path(first).name
    if name.startswith("python"):  # a Python program: name it by its script or module
        script = next((a.decode(errors="replace") for a in argv[1:] if a and not a.startswith(b"-")), "")
        return Path(script).name or name
    return name


def cpu_by_kind(pids: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid in pids:
        kind = process_kind(pid)
        out[kind] = out.get(kind, 0.0) + cpu_seconds([pid])
    return out


def measured(url: str, body: bytes, pids, args) -> dict:
    before, client_before = cpu_by_kind(pids()), time.process_time()
    result = load(url, body, args.connections, args.duration)
    after, result["client_cpu_s"] = cpu_by_kind(pids()), time.process_time() - client_before
    # Processes that ended during the run are lost with their CPU; a server's processes do not end.
    result["by_kind"] = {k: after[k] - before.get(k, 0.0) for k in after}
    result["cpu_s"] = sum(result["by_kind"].values())
    result["per_cpu_s"] = result["requests"] / result["cpu_s"] if result["cpu_s"] else float("nan")
    result["cores"] = result["cpu_s"] / args.duration
    return result


# --- the servers -------------------------------------------------------------------------------------

def wait_for_prediction(url: str, body: bytes, timeout: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10).ok:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"no successful prediction from {url} within {timeout:.0f} s")


def start_mlflow_server(port: int, data: Path) -> subprocess.Popen:
    (data / "artifacts").mkdir(parents=True)
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers",
                             "1", "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}", "--artifacts-destination",
                             str(data / "artifacts")], env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                            stdout=open(data / "mlflow.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.3)
    raise TimeoutError("the MLflow server did not start")


def start_mlflow_serve(model_uri: str, port: int, workers: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # it runs uvicorn from the venv
    return subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)], env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- the benchmark -----------------------------------------------------------------------------------

# A word for a float column: the signature refuses it (MLflow's cast fails), so both servers must answer 400.
BAD_BODY = json.dumps({"dataframe_records": [{"x1": "a lot", "x2": 1.0}]}).encode()


def bad_body_status(url: str) -> int:
    return requests.post(url, data=BAD_BODY, headers={"Content-Type": "application/json"}, timeout=30).status_code


def table(header: tuple, rows: list[tuple]) -> None:
    """A Markdown table, columns padded."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def spread(values: list[float], fmt: str) -> str:
    """The median, and min–max when there is more than one run."""
    median = fmt.format(statistics.median(values))
    return median if len(values) < 2 else f"{median} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=58000, help="MLflow: base + 500, mlflow models serve: "
                        "base + 510 + N (N workers), the Ray head: base + 600 .. base + 799")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run and server")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--mlflow-workers", default="1,2,4", help="worker counts of mlflow models serve")
    parser.add_argument("--max-batch-size", type=int, default=32, help="of the batching Ray deployment")
    parser.add_argument("--no-fast-ingress", action="store_true", help="Ray's Python proxy instead of HAProxy")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.mlflow_workers.split(",")]

    mlflow_url = f"http://127.0.0.1:{args.port_base + 500}"
    os.environ.update(MLPLATFORM_BACKEND="local", MLPLATFORM_RAY_PORT=str(args.port_base + 600),
                      MLFLOW_TRACKING_URI=mlflow_url, MLPLATFORM_RAY_FAST_INGRESS="0" if args.no_fast_ingress else "1")
    head = LocalRayHead(LocalRayConfig.from_environ())
    body = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
    tmp = Path(tempfile.mkdtemp(prefix="mlplatform-bench-serving-"))
    tracking = mlflow_serve = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    batched, unbatched = f"Ray, batching ({args.max_batch_size})", "Ray, no batching"
    configs = [batched, unbatched] + [f"mlflow -w {w}" for w in worker_counts]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    try:
        head.stop()
        shutil.rmtree(head.root, ignore_errors=True)
        tracking = start_mlflow_server(args.port_base + 500, tmp / "mlflow")
        name = unique_name("bench")
        model = register_model(mlflow_url, name, signature=True)
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_url  # MLflow unsets it when it restores its global URI
        print(f"model {model.uri} (with signature); {args.runs} runs × {args.duration:g} s per server, "
              f"{args.connections} connections, one row per request", file=sys.stderr)

        for i in range(args.runs):
            head.stop()  # every run's first deploy is a cold one: the head starts too
            started = time.monotonic()
            status = serving.deploy("bench-b", model.uri, max_batch_size=args.max_batch_size)
            cold = time.monotonic() - started + wait_for_prediction(status["predict_url"], body)
            started = time.monotonic()
            status_nb = serving.deploy("bench-nb", model.uri, max_batch_size=1)
            warm = time.monotonic() - started + wait_for_prediction(status_nb["predict_url"], body)
            # The next warm spare starts after a deploy (~6 CPU-s of imports): measured load waits for it, as on a
            # platform whose last deploy was not seconds ago.
            spare = LocalServing(head.config).spare  # recorded by the deploy's background thread once bench-nb runs
            localhost.wait_until(lambda: (spare() or {}).get("status") == "RUNNING", 180, interval=0.5)

            def ray_pids(other_app):
                return lambda: [pid for pid in head.processes() if f":{other_app}:" not in process_kind(pid)]

            runs = []  # alternate the order of the servers from run to run
            for label, url, app, other in ((batched, status["predict_url"], "bench-b", "bench-nb"),
                                           (unbatched, status_nb["predict_url"], "bench-nb", "bench-b")):
                runs.append((label, url, ray_pids(other), {"start_s": cold if app == "bench-b" else warm}))
            for label, url, pids, extra in (runs if i % 2 == 0 else runs[::-1]):
                load(url, body, args.connections, 2)  # warm-up
                result = measured(url, body, pids, args)
                results[label].append({**result, **extra, "bad_status": bad_body_status(url)})
                print(f"run {i + 1} {label}: {result['rps']:.0f} req/s, {result['per_cpu_s']:.0f} req/CPU-s, "
                      f"CPU by process: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                      sorted(result["by_kind"].items(), key=lambda kv: -kv[1])
                                                      if v >= 0.05), file=sys.stderr)
            serving.delete("bench-nb")
            serving.delete("bench-b")
            head.stop()  # the mlflow runs get the cores without an idle Ray head

            for w in (worker_counts if i % 2 == 0 else worker_counts[::-1]):
                port = args.port_base + 510 + w
                started = time.monotonic()
                mlflow_serve = start_mlflow_serve(model.uri, port, w, tmp / f"mlflow-serve-{w}.log")
                url = f"http://127.0.0.1:{port}/invocations"
                start_s = time.monotonic() - started + wait_for_prediction(url, body)
                load(url, body, args.connections, 2)  # warm-up
                result = measured(url, body, lambda: group_pids(mlflow_serve.pid), args)
                results[f"mlflow -w {w}"].append({**result, "start_s": start_s, "bad_status": bad_body_status(url)})
                print(f"run {i + 1} mlflow -w {w}: {result['rps']:.0f} req/s, {result['per_cpu_s']:.0f} req/CPU-s, "
                      f"CPU {result['cpu_s']:.1f} s", file=sys.stderr)
                stop(mlflow_serve)
                mlflow_serve = None

        def values(config, key):
            return [r[key] for r in results[config]]

        def med(config, key):
            return statistics.median(values(config, key))

        rows = [("deploy/start → first prediction (s)",
                 *[spread(values(c, "start_s"), "{:.1f}") + (" cold" if c == batched else " warm" if c == unbatched
                                                             else "") for c in configs])]
        for label, key, fmt in (("requests/s", "rps", "{:.0f}"), ("p50 latency (ms)", "p50_ms", "{:.1f}"),
                                ("p99 latency (ms)", "p99_ms", "{:.1f}"),
                                ("requests per CPU-second", "per_cpu_s", "{:.0f}"),
                                ("server CPU (cores busy)", "cores", "{:.2f}"),
                                ("load client CPU-s per run", "client_cpu_s", "{:.1f}")):
            rows.append((label, *[spread(values(c, key), fmt) for c in configs]))
        rows.append(("failed requests (all runs)", *[str(sum(values(c, "errors"))) for c in configs]))
        rows.append(("bad body → HTTP status", *[",".join(sorted({str(v) for v in values(c, "bad_status")}))
                                                 for c in configs]))
        table(("", *configs), rows)

        mlflows = configs[2:]
        best = max(mlflows, key=lambda c: med(c, "per_cpu_s"))
        fastest = max(mlflows, key=lambda c: med(c, "rps"))
        print(f"\nbest mlflow per CPU-second: {best}; fastest mlflow in requests/s: {fastest}")
        for ray in (batched, unbatched):
            print(f"{ray} / {best}: requests per CPU-second {med(ray, 'per_cpu_s') / med(best, 'per_cpu_s'):.2f}×, "
                  f"requests/s {med(ray, 'rps') / med(best, 'rps'):.2f}×"
                  + (f"; / {fastest}: requests/s {med(ray, 'rps') / med(fastest, 'rps'):.2f}×" if fastest != best else ""))
        print(f"deploy → first prediction / {best} start: cold {med(batched, 'start_s') / med(best, 'start_s'):.1f}×, "
              f"warm {med(unbatched, 'start_s') / med(best, 'start_s'):.1f}×")
        signature_ok = all(v == 400 for c in configs for v in values(c, "bad_status"))
        for ray in (batched, unbatched):
            ratio = med(ray, "per_cpu_s") / med(best, "per_cpu_s")
            met = ratio >= 2 and med(ray, "p99_ms") <= 30 and signature_ok
            print(f"goal (≥ 2× requests per CPU-second over {best}, p99 ≤ 30 ms, signature enforced) for {ray}: "
                  f"{'met' if met else 'NOT met'} ({ratio:.2f}×, p99 {med(ray, 'p99_ms'):.1f} ms, "
                  f"bad body refused by all: {signature_ok})")
        print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; median (min–max) of "
              f"{args.runs} runs; Ray fast ingress (HAProxy): {head.config.fast_ingress}")
    finally:
        stop(mlflow_serve)
        head.stop()
        shutil.rmtree(head.root, ignore_errors=True)
        stop(tracking)
        shutil.rmtree(tmp, ignore_errors=True)
        left = head.processes()
        if left:
            print(f"processes left: {left}", file=sys.stderr)


if __name__ == "__main__":
    main()
