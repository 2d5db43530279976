"""Reference data logged with the model, for the drift gate of safe rollout (issue 12).

    import mlflow
    from mlplatform import registry
    with mlflow.start_run():
        model.fit(X_train, y_train)
        mlflow.sklearn.log_model(model, name="model", input_example=X_train[:5])
        registry.log_reference_data(X_train)      # the model's inputs (not the label): reference/training.parquet

    registry.load_reference_data("models:/iris/3")            # the DataFrame again (the platform service reads it)

`log_reference_data` writes the frame as Parquet, an artifact of the run (`reference/<name>.parquet`, with
`reference/reference.json` describing it), and logs it as an MLflow dataset input of the run (context
"training", its source the artifact's location), so the lineage shows in MLflow's UI. A frame of more
than `max_rows` rows (default 10,000) is sampled down to that many, seeded (the same rows each time,
in their order), with a warning; the description records both counts. Log the model's input columns:
the platform compares each of them with the live inputs of the inference log (`mlplatform_service.drift`).
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MlflowError, NotFound, RegistryError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

MAX_ROWS = 10_000
SEED = 0
DESCRIPTION = "reference.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_MODEL_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[1-9][0-9]*)$")
_MODEL_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_LOGGED_MODEL = re.compile(r"^models:/(?P<id>m-[0-9a-f]+)$")
_RUN_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)(/.*)?$")
_RUN_ID = re.compile(r"^[0-9A-Za-z_-]+$")
FORMS = "'models:/<name>/<version>', 'models:/<name>@<alias>', 'models:/m-<id>', 'runs:/<run_id>/...' or a run id"


@dataclass(frozen=True)
class ReferenceData:
    """What log_reference_data logged: where, how many rows (and whether they were sampled), the digest."""

    run_id: str
    artifact_uri: str  # the Parquet file's location, the dataset's source
    path: str  # the Parquet file's path among the run's artifacts
    name: str
    rows: int
    rows_before_sampling: int
    sampled: bool
    max_rows: int
    seed: int
    digest: str
    columns: dict[str, str]  # column: dtype

    def as_dict(self) -> dict:
        return asdict(self)


def log_reference_data(df: pd.DataFrame, *, run_id: str | None = None, artifact_path: str = "reference",
                       name: str = "training", max_rows: int = MAX_ROWS, seed: int = SEED,
                       client: MlflowClient | None = None) -> ReferenceData:
    """Log `df` (the model's training inputs) as the reference data of the run: Parquet under
    `artifact_path`, and an MLflow dataset input of the run with context "training".

    `run_id`: the run (default: MLflow's active run). `name`: the dataset's name and the file's
    (`<name>.parquet`). More than `max_rows` rows are sampled down to `max_rows`, seeded by `seed`.
    `client`: an MlflowClient (default: one for MLflow's tracking URI)."""
    import mlflow
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise RegistryError(f"reference data is a {type(df).__name__}: give a pandas DataFrame")
    if df.empty or not len(df.columns):
        raise RegistryError(f"reference data has {len(df)} rows and {len(df.columns)} columns: give the model's "
                            "training inputs, at least one row and one column")
    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad:
        raise RegistryError(f"reference data column names must be strings (Parquet's rule); not: "
                            f"{', '.join(map(repr, bad[:5]))}")
    if df.columns.duplicated().any():
        raise RegistryError(f"reference data has duplicated columns: "
                            f"{', '.join(sorted(set(df.columns[df.columns.duplicated()])))}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(f"name {name!r} is not allowed: letters, digits, '_', '.', '-' (up to 100), such as "
                            "'training'")
    artifact_path = _artifact_path(artifact_path)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise RegistryError(f"max_rows {max_rows!r} is not allowed: give a whole number of at least 1 "
                            f"(default {MAX_ROWS})")
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RegistryError("no active MLflow run: call log_reference_data inside `with mlflow.start_run():` "
                                "or pass run_id=")
        run_id = active.info.run_id
    client = client or mlflow.MlflowClient()

    total = len(df)
    sample = _sample(df, max_rows, seed)
    if total > max_rows:
        warnings.warn(f"reference data: {total} rows sampled down to {max_rows} (seed {seed}); pass max_rows= "
                      "to keep more", stacklevel=2)
    run = _mlflow(lambda: client.get_run(run_id), f"run {run_id!r}")
    path = f"{artifact_path}/{name}.parquet"
    artifact_uri = f"{run.info.artifact_uri.rstrip('/')}/{path}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's hints about the dataset's source and pandas' deprecations
        dataset = mlflow.data.from_pandas(sample, source=_source(artifact_uri, client.tracking_uri), name=name)
    reference = ReferenceData(run_id=run_id, artifact_uri=artifact_uri, path=path, name=name, rows=len(sample),
                              rows_before_sampling=total, sampled=total > max_rows, max_rows=max_rows, seed=seed,
                              digest=dataset.digest, columns={c: str(t) for c, t in sample.dtypes.items()})
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp, f"{name}.parquet")
        try:
            sample.to_parquet(file, index=False)
        except Exception as e:  # pyarrow's errors: a column of mixed or unsupported objects
            raise RegistryError(f"reference data cannot be written as Parquet: {e}; give columns of numbers, "
                                "strings, booleans or categories") from None
        Path(tmp, DESCRIPTION).write_text(json.dumps(reference.as_dict(), indent=1))
        _mlflow(lambda: client.log_artifact(run_id, str(file), artifact_path), f"run {run_id!r}")
        _mlflow(lambda: client.log_artifact(run_id, str(Path(tmp, DESCRIPTION)), artifact_path), f"run {run_id!r}")
    _log_input(client, run_id, dataset)
    return reference


def load_reference_data(model_uri_or_run_id: str, client: MlflowClient | None = None, *,
                        artifact_path: str = "reference") -> pd.DataFrame:
    """The reference data logged with a model: of a model version (`models:/<name>/<version>`,
    `models:/<name>@<alias>`), a logged model (`models:/m-<id>`) or a run (`runs:/<run_id>/...`, a run id),
    read from its run's `artifact_path`. NotFound when the run has none."""
    import mlflow
    import pandas as pd

    client = client or mlflow.MlflowClient()
    artifact_path = _artifact_path(artifact_path)
    run_id = run_of(model_uri_or_run_id, client)
    listed = _mlflow(lambda: client.list_artifacts(run_id, artifact_path), f"the artifacts of run {run_id!r}")
    files = {Path(f.path).name: f.path for f in listed if not f.is_dir}
    with tempfile.TemporaryDirectory() as tmp:
        if DESCRIPTION in files:
            local = _mlflow(lambda: client.download_artifacts(run_id, files[DESCRIPTION], tmp), f"run {run_id!r}")
            wanted = Path(json.loads(Path(local).read_text())["path"]).name
        else:  # logged without the description: the one Parquet file there
            parquet = sorted(f for f in files if f.endswith(".parquet"))
            wanted = parquet[0] if len(parquet) == 1 else None
        if wanted not in files:
            raise NotFound(f"run {run_id} ({model_uri_or_run_id}) has no reference data under '{artifact_path}/' "
                           f"(its files there: {', '.join(sorted(files)) or 'none'}): log it at training time with "
                           "mlplatform.registry.log_reference_data(X_train)")
        local = _mlflow(lambda: client.download_artifacts(run_id, files[wanted], tmp), f"run {run_id!r}")
        return pd.read_parquet(local)


def run_of(model_uri_or_run_id: str, client: MlflowClient) -> str:
    """The run id behind a model URI or run URI (or the run id itself, checked to exist)."""
    text = model_uri_or_run_id.strip() if isinstance(model_uri_or_run_id, str) else ""
    if m := _MODEL_VERSION.fullmatch(text):
        mv = _mlflow(lambda: client.get_model_version(m["name"], m["version"]),
                     f"version {m['version']} of {m['name']!r}")
        run_id = mv.run_id
    elif m := _MODEL_ALIAS.fullmatch(text):
        mv = _mlflow(lambda: client.get_model_version_by_alias(m["name"], m["alias"]),
                     f"@{m['alias']} of {m['name']!r}")
        run_id = mv.run_id
    elif m := _LOGGED_MODEL.fullmatch(text):
        run_id = _mlflow(lambda: client.get_logged_model(m["id"]), f"logged model {m['id']!r}").source_run_id
    elif m := _RUN_URI.fullmatch(text):
        run_id = m["run_id"]
    elif _RUN_ID.fullmatch(text):
        run_id = text
    else:
        raise RegistryError(f"{model_uri_or_run_id!r} is not allowed: give {FORMS}")
    if not run_id:
        raise NotFound(f"{text} was not logged from a run, so it has no reference data: register a model logged in "
                       "a run that called mlplatform.registry.log_reference_data")
    if not text.startswith("models:/"):
        _mlflow(lambda: client.get_run(run_id), f"run {run_id!r}")
    return run_id


def _artifact_path(value) -> str:
    path = value.strip("/") if isinstance(value, str) else ""
    if not path or ".." in path.split("/") or "\\" in path:
        raise RegistryError(f"artifact_path {value!r} is not allowed: give a relative path such as 'reference'")
    return path


def _sample(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most max_rows rows, chosen with `seed`, in their order; the index dropped (Parquet keeps none)."""
    import numpy as np

    if len(df) > max_rows:
        df = df.iloc[np.sort(np.random.default_rng(seed).choice(len(df), size=max_rows, replace=False))]
    return df.reset_index(drop=True)


def _source(artifact_uri: str, tracking_uri: str):
    """The dataset's source: the artifact's URI (s3://, file:// ...); for artifacts the tracking server
    serves (mlflow-artifacts:/, which MLflow's dataset sources do not take), the same file's HTTP address."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.exceptions import MlflowException

    if artifact_uri.startswith("mlflow-artifacts:"):
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        return HTTPDatasetSource(MlflowArtifactsRepository.resolve_uri(artifact_uri, tracking_uri))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return resolve_dataset_source(artifact_uri)
    except MlflowException:
        raise RegistryError(f"the run's artifacts are at {artifact_uri!r}, which MLflow cannot name as a dataset "
                            "source: log the reference data in a run whose artifacts are on S3, a file system "
                            "or the tracking server") from None


def _log_input(client: MlflowClient, run_id: str, dataset) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's schema hints (integer columns and missing values)
        entity = Dataset(**dataset.to_dict())
    _mlflow(lambda: client.log_inputs(run_id, [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, "training")])]),
            f"run {run_id!r}")


def _mlflow(call, what: str):
    """call(), with MLflow's "does not exist" as NotFound and its other errors as MlflowError; a lost
    connection stays MLflow's own error (an outage, told apart by the callers)."""
    from mlflow.exceptions import MlflowException

    from ..mlflow_health import lost_contact

    try:
        return call()
    except MlflowException as e:
        if lost_contact(e):
            raise
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFound(f"{what} does not exist in MLflow: {e.message}") from None
        raise MlflowError(f"MLflow could not read or write {what}: {e.message}") from None
