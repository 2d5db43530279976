"""Where a served prediction's CPU goes, without HTTP: the replica's work per request (parse + cast to the
signature, the model's predict with MLflow's schema enforcement, the JSON answer), alone and in batches,
against MLflow's scoring function (`mlflow.pyfunc.scoring_server.invocations`, what `mlflow models serve`
runs per request). Same model as bench/serving.py, one row per request.

    .venv/bin/python bench/serving_profile.py [--profile]

CPU milliseconds per request (process time; median of `--repeats`). What bench/serving.py's requests per
CPU-second add on top of these is each server's HTTP and framework work (Ray Serve: HAProxy, the replica's
request handling and batching queue, the controller; mlflow: uvicorn + FastAPI).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlflow.pyfunc  # noqa: E402
import mlflow.sklearn  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.pyfunc import scoring_server  # noqa: E402

from mlplatform.serving.payload import cast_together, dumps, parse_predict, split_outputs  # noqa: E402
from tests.support.mlflow_models import FEATURES, SAMPLE_ROWS, TRAINING, train  # noqa: E402


def cpu_ms_per_request(fn, per_call: int, calls: int, repeats: int) -> float:
    for _ in range(3):
        fn()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            fn()
        samples.append(1000 * (time.process_time() - started) / (calls * per_call))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile of the replica's work, batch of 1")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    model = train()
    path = Path(tempfile.mkdtemp(prefix="mlplatform-bench-profile-")) / "model"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(TRAINING[FEATURES],
                                                                          model.predict(TRAINING[FEATURES])))
    pyfunc = mlflow.pyfunc.load_model(str(path))
    schema = pyfunc.metadata.get_input_schema()
    body = json.dumps({"dataframe_records": SAMPLE_ROWS[:1]}).encode()
    frame = parse_predict(body, schema)

    def replica(k: int):
        """What the replica does for k requests scored together (app.py's predict_batch)."""
        def run():
            frames = [parse_predict(body) for _ in range(k)]
            joined, _ = cast_together(frames, schema)  # one cast per batch
            return [dumps({"predictions": rows}) for rows in split_outputs(pyfunc.predict(joined), [1] * k)]
        return run

    measures = [("mlflow scoring_server.invocations", lambda: scoring_server.invocations(
                    body.decode(), "application/json", pyfunc, schema), 1),
                ("replica: parse_predict (with the cast)", lambda: parse_predict(body, schema), 1),
                ("replica: parse_predict (no cast)", lambda: parse_predict(body), 1),
                ("replica: pyfunc.predict of one row", lambda: pyfunc.predict(frame), 1)]
    measures += [(f"replica: the whole work, batches of {k}", replica(k), k) for k in (1, 4, 8, 32)]
    print(f"{'per request':<44}{'CPU ms':>8}")
    for name, fn, k in measures:
        print(f"{name:<44}{cpu_ms_per_request(fn, k, max(5, 160 // k), args.repeats):>8.2f}")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [replica(1)() for _ in range(200)])
        pstats.Stats(profile).sort_stats("cumulative").print_stats(20)


if __name__ == "__main__":
    main()
