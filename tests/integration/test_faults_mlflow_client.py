"""MLflow's client in a notebook is bounded by the contract: a kernel-like process with the environment
the hub writes (`PlatformEnvironment.to_environ()`) gets an error from `MlflowClient().search_experiments()`
within seconds when MLflow is stopped (refused connections) or hung (accepts, never answers), instead
of MLflow's default four minutes of retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys


from mlplatform_core.contract import PlatformEnvironment

# One process for both servers: importing MLflow takes longer than the calls.
CALLS = """
import json, sys, time
from mlflow import MlflowClient
answers = []
for uri in [None] + sys.argv[1:]:  # None: MLFLOW_TRACKING_URI, as a notebook's `mlflow` uses it
    started = time.monotonic()
    try:
        MlflowClient(uri).search_experiments()
        error = None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    answers.append({"seconds": time.monotonic() - started, "error": error})
print(json.dumps(answers))
"""


def test_a_kernels_mlflow_calls_fail_within_the_contracts_bound(stopped_port, silent_port):
    contract = PlatformEnvironment(user="alice", team="team-vision",
                                   mlflow_tracking_uri=f"http://127.0.0.1:{stopped_port}",
                                   aws_config_file="/nonexistent/aws_config").to_environ()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | contract
    done = subprocess.run([sys.executable, "-c", CALLS, f"http://127.0.0.1:{silent_port}"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stopped, hung = json.loads(done.stdout.splitlines()[-1])
    for answer, port in ((stopped, stopped_port), (hung, silent_port)):
        assert answer["error"].startswith(f"MlflowException: API request to http://127.0.0.1:{port}/api/2.0/mlflow/"
                                          "experiments/search failed")
    assert stopped["seconds"] < 5  # 3 refused connections, backoff 0 then about 2 s
    assert hung["seconds"] < 13  # 3 tries of 3 s, the same backoff
