"""Serving benchmark: the platform's Ray Serve path against `mlflow models serve`, same model, same client.

    .venv/bin/python bench/serving.py --port-base 36000 --runs 3 --duration 10 --connections 8

Starts an MLflow server (SQLite, `--workers 1`, as the local platform does), registers the small
scikit-learn model of the tests (tests/support/mlflow_models.py; with its signature, as promotion
requires), then measures:

  (a) deploy → first successful prediction: `mlplatform.serving.deploy()` with no Ray head running
      (cold: the head starts too) and with the head warm (a second application); for
      `mlflow models serve`, from starting the process
  (b) requests/s and p50/p99 latency of the Ray Serve endpoint's /predict
  (c) the same for `mlflow models serve`

The load client is the same for both: `--connections` keep-alive HTTP/1.1 connections, each sending
one row (`{"dataframe_records": [...]}`, a body both servers accept) as soon as the previous answer
came, for `--duration` seconds; runs alternate between the two servers. CPU time of each server's
processes during a run gives requests per CPU-second, the per-core comparison. Everything started is
stopped at the end (also on errors and Ctrl-C).
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

from mlplatform import serving  # noqa: E402
from mlplatform.serving.local import LocalRayConfig, LocalRayHead  # noqa: E402

from tests.support.mlflow_models import SAMPLE_ROWS, register_model, unique_name  # noqa: E402

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


# --- the load client ---------------------------------------------------------------------------------

async def _connection(host: str, port: int, request: bytes, until: float, latencies: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(status)
    finally:
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


def measured(url: str, body: bytes, pids, args) -> dict:
    before = cpu_seconds(pids())
    result = load(url, body, args.connections, args.duration)
    result["cpu_s"] = cpu_seconds(pids()) - before
    result["per_cpu_s"] = result["requests"] / result["cpu_s"] if result["cpu_s"] else float("nan")
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


def start_mlflow_serve(model_uri: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # it runs uvicorn from the venv
    return subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "-w", "1"], env=env, stdout=open(log, "wb"),
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

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=36000, help="MLflow: base + 500, mlflow models serve: "
                        "base + 510, the Ray head: base + 600 .. base + 799")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--unsigned", action="store_true", help="register the model without a signature")
    parser.add_argument("--max-batch-size", type=int, default=32, help="of the Ray deployment (1: no batching)")
    parser.add_argument("--no-fast-ingress", action="store_true", help="Ray's Python proxy instead of HAProxy")
    args = parser.parse_args()

    mlflow_url = f"http://127.0.0.1:{args.port_base + 500}"
    serve_port = args.port_base + 510
    os.environ.update(MLPLATFORM_BACKEND="local", MLPLATFORM_RAY_PORT=str(args.port_base + 600),
                      MLFLOW_TRACKING_URI=mlflow_url, MLPLATFORM_RAY_FAST_INGRESS="0" if args.no_fast_ingress else "1")
    head = LocalRayHead(LocalRayConfig.from_environ())
    body = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
    tmp = Path(tempfile.mkdtemp(prefix="mlplatform-bench-serving-"))
    tracking = mlflow_serve = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        head.stop()
        shutil.rmtree(head.root, ignore_errors=True)
        tracking = start_mlflow_server(args.port_base + 500, tmp / "mlflow")
        name = unique_name("bench")
        model = register_model(mlflow_url, name, signature=not args.unsigned)
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_url  # MLflow unsets it when it restores its global URI
        print(f"model {model.uri} ({'no signature' if args.unsigned else 'with signature'}); "
              f"{args.runs} runs × {args.duration:g} s, {args.connections} connections, one row per request",
              file=sys.stderr)

        started = time.monotonic()
        status = serving.deploy("bench", model.uri, max_batch_size=args.max_batch_size)
        cold = time.monotonic() - started + wait_for_prediction(status["predict_url"], body)
        started = time.monotonic()
        warm_status = serving.deploy("bench-warm", model.uri, max_batch_size=args.max_batch_size)
        warm = time.monotonic() - started + wait_for_prediction(warm_status["predict_url"], body)
        serving.delete("bench-warm")

        started = time.monotonic()
        mlflow_serve = start_mlflow_serve(model.uri, serve_port, tmp / "mlflow-serve.log")
        serve_url = f"http://127.0.0.1:{serve_port}/invocations"
        mlflow_start = time.monotonic() - started + wait_for_prediction(serve_url, body)
        print(f"deploy → first prediction: Ray cold {cold:.1f} s, warm {warm:.1f} s; "
              f"mlflow models serve {mlflow_start:.1f} s", file=sys.stderr)

        load(status["predict_url"], body, args.connections, 2)  # warm-up of both paths
        load(serve_url, body, args.connections, 2)
        ray_runs, mlflow_runs = [], []
        for i in range(args.runs):
            ray_runs.append(measured(status["predict_url"], body, head.processes, args))
            mlflow_runs.append(measured(serve_url, body, lambda: group_pids(mlflow_serve.pid), args))
            print(f"run {i + 1}: Ray {ray_runs[-1]['rps']:.0f} req/s, mlflow {mlflow_runs[-1]['rps']:.0f} req/s",
                  file=sys.stderr)

        def median(runs, key):
            return statistics.median(r[key] for r in runs)

        rows = [
            ("deploy → first prediction (s)", f"{cold:.1f} cold / {warm:.1f} warm", f"{mlflow_start:.1f}",
             f"{warm / mlflow_start:.2f} (warm)"),
        ]
        for label, key, fmt in (("requests/s", "rps", "{:.0f}"), ("p50 latency (ms)", "p50_ms", "{:.1f}"),
                                ("p99 latency (ms)", "p99_ms", "{:.1f}"),
                                ("requests per CPU-second", "per_cpu_s", "{:.0f}")):
            a, b = median(ray_runs, key), median(mlflow_runs, key)
            rows.append((label, fmt.format(a), fmt.format(b), f"{a / b:.2f}"))
        errors = (sum(r["errors"] for r in ray_runs), sum(r["errors"] for r in mlflow_runs))
        rows.append(("failed requests (all runs)", str(errors[0]), str(errors[1]), ""))
        rows.append(("req/s of each run", ", ".join(f"{r['rps']:.0f}" for r in ray_runs),
                     ", ".join(f"{r['rps']:.0f}" for r in mlflow_runs), ""))
        header = ("", "Ray Serve (mlplatform, local)", "mlflow models serve", "ratio Ray / mlflow")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
        print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in rows:
            print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
        print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; median of {args.runs} runs; "
              f"Ray fast ingress (HAProxy): {head.config.fast_ingress}, max batch size {args.max_batch_size}")
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
