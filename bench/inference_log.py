"""Inference-log benchmark: what `InferenceLog.record()` costs the response path, against a no-op.

    .venv/bin/python bench/inference_log.py                       # in-process writers only
    .venv/bin/python bench/inference_log.py --s3                  # also a real S3 server (SeaweedFS)
    .venv/bin/python bench/inference_log.py --records 50000 --runs 3

Each scenario builds `--records` InferenceRecords as a router would (the /predict body as received,
one row of four features by default, its predictions, latency, status) and hands each to `record()`
as fast as one thread can, timing every call; the no-op row hands them to a function that does
nothing. Reported, median run of `--runs`:

  records/s     records built and handed over per second by the calling thread (÷no-op: its share)
  call p50/p99  time of the call itself; "overhead" is that minus the no-op's call
  CPU µs/record   per record handed over: the calling thread's CPU beyond the no-op's, and the
                CPU of the log's thread (and the S3 client's): Parquet conversion and the upload,
                which the replica's process pays too, off the response path (a record dropped or
                sampled out costs that thread nothing)
  written / dropped   what reached the writer and what the bounded buffer turned away

Scenarios: the log with a writer that discards the Parquet bytes (the log's whole cost but the
upload), with `sample_rate` 0.1 (nine calls in ten end after the hash), with a stalled writer (S3
hung: the buffer fills, then every call is a drop), and with `--s3` the real upload to SeaweedFS
(boto3's put_object: signing and HTTP in Python, in the replica's process). The calling thread is
not paced, so with the log on it outruns the log's thread and the buffer may fill (then `dropped`
grows and calls get cheaper: the per-record cost column is the honest one). For the issue's goal
(routing + logging ≤ 15 % of throughput) add, per request, the call's overhead and the background
CPU per record (× sample rate) and set them against the endpoint's CPU per request (bench/serving.py).

On this machine (`bench/inference_log.py --s3`; 2 cores shared with other work):

    100,000 records per run, 1 row(s) per body, median of 3 run(s), 2 CPUs; paced rows are set against the paced no-op

    scenario                      records/s  ÷no-op | call µs p50    p99 | overhead µs p50    p99 | CPU µs/record: caller log thread |  written  dropped
    ----------------------------------------------------------------------------------------------------------------------------------------------------
    no-op                           439,238   1.00x |        0.15   0.32 |                        |                                  |        0        0
    log, writer discards            153,880   0.35x |        1.12   2.75 |            0.97   2.43 |                 +2.31       3.00 |   48,000   52,000
    log, sample 0.1                 170,201   0.39x |        2.46   5.66 |            2.30   5.34 |                 +2.74       0.97 |    9,989        0
    stalled S3                      233,536   0.53x |        1.59   2.77 |            1.43   2.45 |                 +1.90       1.78 |   20,000   80,000
    S3 (SeaweedFS)                  145,938   0.33x |        1.49   2.80 |            1.33   2.48 |                 +3.20       3.27 |   35,000   65,000
    no-op, paced 5,000/s              5,002         |        0.17   2.41 |                        |                                  |        0        0
    S3, paced 5,000/s                 5,001         |        1.58  25.05 |            1.41  22.64 |                 +2.26      10.53 |  100,000        0

    Logging every request (S3 (SeaweedFS), paced): 12.8 µs of CPU per request in the replica's process: 1.28 % of an endpoint spending 1 ms of CPU per request, 0.64 % at 2 ms (bench/serving.py: ~2 ms, 937 req/s on 2 cores).

Read: one `record()` costs ~1.5 µs on the calling thread (the no-op 0.15 µs); a sampled-out request
~2.5 µs (the keyed blake2b of its id). Logging everything at 5,000 requests/s costs the replica's
process ~13 µs of CPU per request in all, about 80 % of it in the log's thread (Parquet conversion
~6 µs a record written, boto3's upload ~4.5 µs), i.e. ~1 % of an endpoint spending 1–2 ms of CPU per request; the
paced p99 (~25 µs) is the caller waiting for the GIL while that thread converts or signs. Unpaced,
the caller outruns the thread and the buffer drops (as designed): those rows' "records/s" are the
calling thread's, slowed by the thread's share of the GIL, not an endpoint's throughput. With S3
stalled nothing changes for the caller but the drops.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "extensions"))

from mlplatform.serving.inference_log import InferenceLog, InferenceRecord, S3Writer  # noqa: E402

BUCKET, PREFIX, REGION = "platform", "teams/bench/", "us-east-1"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class Discard:
    """A writer that drops the Parquet bytes: the log's cost without the upload."""

    def write(self, endpoint, first_time, data):
        return "discarded"


class Stalled:
    """A writer stuck in its first call until released (a hung S3)."""

    def __init__(self):
        self.release = threading.Event()

    def write(self, endpoint, first_time, data):
        self.release.wait(600)
        return "late"


def bodies(n: int, rows: int) -> list[str]:
    out = []
    for i in range(n):
        records = [{f: round(1 + (i * 7 + j * 13 + k) % 50 / 10, 1) for k, f in enumerate(FEATURES)} for j in range(rows)]
        out.append(json.dumps({"dataframe_records": records}))
    return out


def run(kind: str, records: int, rows: int, client=None, pace: float | None = None) -> dict:
    """One run of a scenario: timings of each call, the caller's and the background's CPU, the log's counters."""
    texts = bodies(min(records, 1000), rows)
    outputs = json.dumps([0] * rows)
    log, stalled = None, None
    if kind == "no-op":
        def call(rec):
            return True
    else:
        if kind == "stalled S3":
            stalled = Stalled()
            writer = stalled
        elif kind.startswith("S3"):
            writer = S3Writer(client, BUCKET, PREFIX)
        else:
            writer = Discard()
        log = InferenceLog(writer, sample_rate=0.1 if "0.1" in kind else 1.0, seed="bench")
        call = log.record
    times = [0] * records
    now = datetime.now(UTC)
    perf = time.perf_counter_ns
    cpu0, main0 = time.process_time(), time.thread_time()
    started = time.perf_counter()
    for i in range(records):
        if pace and i % 64 == 0:  # paced: as a replica answering `pace` requests a second would call it
            ahead = started + i / pace - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        rec = InferenceRecord(request_id=f"{i:08x}-bench", endpoint="iris", side="champion", mode="single",
                              model_version="3", latency_ms=2.5, status=200, inputs=texts[i % len(texts)],
                              outputs=outputs, time=now)
        t = perf()
        call(rec)
        times[i] = perf() - t
    elapsed = time.perf_counter() - started
    main_cpu = time.thread_time() - main0
    stats = {}
    if log is not None:
        if stalled:
            stalled.release.set()
        log.close(timeout=120)
        stats = log.stats()
    background = (time.process_time() - cpu0) - main_cpu  # the log's thread and the S3 client's, to the end
    times.sort()
    return {"rate": records / elapsed, "p50": times[len(times) // 2] / 1000, "p99": times[int(len(times) * 0.99)] / 1000,
            "caller_cpu": main_cpu * 1e6 / records, "bg_cpu": background * 1e6 / records,
            "written": stats.get("written", 0), "dropped": stats.get("dropped", 0)}


# --- a throwaway SeaweedFS ---------------------------------------------------------------------------

def seaweedfs_client(stack: ExitStack, port_base: int):
    from hub_config.local import seaweedfs
    from tests.support.seaweedfs_server import seaweedfs_server

    config_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-seaweedfs-")))
    url, keys = stack.enter_context(seaweedfs_server(config_dir, port_base, REGION, BUCKET))
    return seaweedfs.admin_client(url, REGION, keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records per run (default 100,000)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request body (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; the median is shown (default 3)")
    parser.add_argument("--pace", type=float, default=5000, help="requests/s of the paced scenario (default 5,000)")
    parser.add_argument("--s3", action="store_true", help="also log to a real S3 server (SeaweedFS, started here)")
    parser.add_argument("--port-base", type=int, default=38800, help="where to look for SeaweedFS's 8 ports")
    args = parser.parse_args()

    sink = "S3 (SeaweedFS)" if args.s3 else "log, writer discards"
    paced_noop = f"no-op, paced {args.pace:,.0f}/s"
    paced = f"{'S3' if args.s3 else 'discards'}, paced {args.pace:,.0f}/s"
    kinds = ["no-op", "log, writer discards", "log, sample 0.1", "stalled S3"] + (["S3 (SeaweedFS)"] if args.s3 else [])
    kinds += [paced_noop, paced]
    with ExitStack() as stack:
        client = seaweedfs_client(stack, args.port_base) if args.s3 else None
        results: dict[str, list[dict]] = {k: [] for k in kinds}
        run(sink, 3000, args.rows, client)  # warm-up: pyarrow's and boto3's first calls set things up
        for _ in range(args.runs):  # scenarios interleaved, so a busy moment of the machine hits them all
            for kind in kinds:
                scenario = {paced: sink, paced_noop: "no-op"}.get(kind, kind)
                pace = args.pace if kind in (paced, paced_noop) else None
                results[kind].append(run(scenario, args.records, args.rows, client, pace))

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    print(f"{args.records:,} records per run, {args.rows} row(s) per body, median of {args.runs} run(s), "
          f"{os.cpu_count()} CPUs; paced rows are set against the paced no-op\n")
    header = (f"{'scenario':28} {'records/s':>10} {'÷no-op':>7} | {'call µs p50':>11} {'p99':>6} | "
              f"{'overhead µs p50':>15} {'p99':>6} | {'CPU µs/record: caller':>21} {'log thread':>10} | "
              f"{'written':>8} {'dropped':>8}")
    print(header)
    print("-" * len(header))
    for kind in kinds:
        base = {k: median(paced_noop if "paced" in kind else "no-op", k) for k in ("rate", "p50", "p99", "caller_cpu")}
        m = {k: median(kind, k) for k in ("rate", "p50", "p99", "caller_cpu", "bg_cpu", "written", "dropped")}
        noop = kind.startswith("no-op")
        over = "" if noop else f"{m['p50'] - base['p50']:15.2f} {m['p99'] - base['p99']:6.2f}"
        caller = "" if noop else f"{m['caller_cpu'] - base['caller_cpu']:+21.2f}"
        bg = "" if noop else f"{m['bg_cpu']:10.2f}"
        ratio = "" if "paced" in kind else f"{m['rate'] / base['rate']:6.2f}x"
        print(f"{kind:28} {m['rate']:10,.0f} {ratio:>7} | {m['p50']:11.2f} {m['p99']:6.2f} | {over:>22} | "
              f"{caller:>21} {bg:>10} | {m['written']:8,.0f} {m['dropped']:8,.0f}")
    cost = median(paced, "caller_cpu") - median(paced_noop, "caller_cpu") + median(paced, "bg_cpu")
    print(f"\nLogging every request ({sink}, paced): {cost:.1f} µs of CPU per request in the replica's process: "
          f"{cost / 10:.2f} % of an endpoint spending 1 ms of CPU per request, {cost / 20:.2f} % at 2 ms "
          "(bench/serving.py: ~2 ms, 937 req/s on 2 cores).")

if __name__ == "__main__":
    main()
