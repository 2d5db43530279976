"""Register small scikit-learn models in a real MLflow server (for the registry, serving and REST tests).

    from tests.support.mlflow_models import register_model, unique_name
    mv = register_model(platform.mlflow_url, unique_name("iris"), metrics={"accuracy": 0.95})
    mv.uri                                   # "models:/iris-1a2b3c4d/1"

Each call logs one run (params, metrics, the training dataset as a run input) in the experiment
`experiment` and registers its model as a new version. The model is a logistic regression on two
numeric columns (`FEATURES`), trained on eight rows: fast to log, load and serve; `SAMPLE_ROWS` are
valid inputs for a prediction.
"""

from __future__ import annotations

import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from sklearn.linear_model import LogisticRegression

FEATURES = ["x1", "x2"]
TRAINING = pd.DataFrame({"x1": [0.0, 0.2, 0.1, 0.3, 1.0, 0.9, 0.8, 1.1],
                         "x2": [1.0, 0.9, 1.2, 0.8, 0.1, 0.0, 0.2, 0.3],
                         "label": [0, 0, 0, 0, 1, 1, 1, 1]})
SAMPLE_ROWS = [{"x1": 0.1, "x2": 1.0}, {"x1": 0.9, "x2": 0.1}]
DATASET_NAME = "toy-training"
DATASET_SOURCE = "/data/toy-training.csv"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def unique_name(prefix: str = "model") -> str:
    """A registered model name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def train() -> LogisticRegression:
    return LogisticRegression().fit(TRAINING[FEATURES], TRAINING["label"])


def register_model(tracking_uri: str, name: str, *, metrics: dict[str, float] | None = None,
                   params: dict | None = None, signature: bool = True, dataset: bool = True,
                   version_tags: dict[str, str] | None = None, model_tags: dict[str, str] | None = None,
                   experiment: str = "mlplatform-tests", input_example: pd.DataFrame | None = None
                   ) -> RegisteredVersion:
    """Log a run with `metrics` and `params` and register its model as the next version of `name`.

    `signature=False` logs the model without a signature; `dataset=False` logs no run input;
    `input_example` is saved with the model as MLflow's `input_example=`.
    `version_tags` go on the new version, `model_tags` on the registered model. Only an MlflowClient
    talks to the server: MLflow's global tracking URI and MLFLOW_TRACKING_URI are not touched.
    """
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    model = train()
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    params = {"C": model.C, "solver": model.solver, **(params or {})}
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    with warnings.catch_warnings():
        # MLflow's hints (integer labels, the dataset source's type, pandas deprecations) are noise here.
        warnings.simplefilter("ignore")
        if dataset:
            data = mlflow.data.from_pandas(TRAINING, source=DATASET_SOURCE, targets="label", name=DATASET_NAME)
            client.log_inputs(run_id, [DatasetInput(Dataset(**data.to_dict()),
                                                    [InputTag(MLFLOW_DATASET_CONTEXT, "training")])])
        sig = infer_signature(TRAINING[FEATURES], model.predict(TRAINING[FEATURES])) if signature else None
        with tempfile.TemporaryDirectory() as tmp:
            # pip_requirements given: MLflow would otherwise infer them by loading the model in a subprocess.
            mlflow.sklearn.save_model(model, f"{tmp}/model", signature=sig, input_example=input_example,
                                      pip_requirements=["scikit-learn", "pandas"])
            client.log_artifacts(run_id, f"{tmp}/model", "model")
    client.set_terminated(run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=version_tags)
    for key, value in (model_tags or {}).items():
        client.set_registered_model_tag(name, key, value)
    return RegisteredVersion(name, str(mv.version), run_id)
