"""Read what the gates and the model card need from MLflow, as plain values. Reads only."""

from __future__ import annotations

import json
import re
import tempfile
from datetime import UTC, datetime

import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from mlplatform_core.timestamps import format_time

from ..mlflow_health import lost_contact, require_mlflow
from .errors import MlflowError, NotFound, RegistryError

_VERSION = re.compile(r"^[1-9][0-9]*$")


def _where(client: MlflowClient) -> str:
    return f"MLflow at {client.tracking_uri}"


def registered_model(client: MlflowClient, name: str):
    """The registered model, or NotFound naming a few that exist."""
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"model name {name!r} is not allowed: give the name of a registered model")
    if "/" in name or ":" in name:  # MLflow's own rule; asking it would be a 502, not the caller's 400
        raise RegistryError(f"model name {name!r} is not allowed: registered model names cannot contain '/' or ':'")
    require_mlflow(client.tracking_uri)
    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise MlflowError(f"{_where(client)} could not read registered model {name!r}: {e.message}") from None
    known = [m.name for m in client.search_registered_models(max_results=20)]
    raise NotFound(f"no registered model {name!r} in {_where(client)}; registered models: "
                   f"{', '.join(known) if known else 'none'}{' (first 20)' if len(known) == 20 else ''}") from None


def version_numbers(client: MlflowClient, name: str) -> list[str]:
    versions = client.search_model_versions(f"name = '{_quote(name)}'")
    return sorted((v.version for v in versions), key=int)


def model_version(client: MlflowClient, name: str, version):
    """A model version of an existing registered model, or NotFound listing its versions."""
    text = str(version).strip()
    if not _VERSION.fullmatch(text):
        raise NotFound(f"version {version!r} of {name!r} is not a version number; versions: "
                       f"{', '.join(version_numbers(client, name)) or 'none'}")
    try:
        return client.get_model_version(name, text)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise MlflowError(f"{_where(client)} could not read version {text} of {name!r}: {e.message}") from None
    raise NotFound(f"{name!r} has no version {text}; versions: {', '.join(version_numbers(client, name)) or 'none'}")


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def all_versions(client: MlflowClient, name: str) -> list:
    """Every version of a model, with its tags (search results carry tags, not aliases)."""
    return list(client.search_model_versions(f"name = '{_quote(name)}'"))


def run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    return dict(client.get_run(run_id).data.metrics)


def signature(client: MlflowClient, name: str, version: str, download=None) -> tuple[dict | None, str | None]:
    """The version's MLmodel signature as `{"inputs": [...], "outputs": [...], "params": [...]}`, or
    (None, why) when the model has none or its MLmodel cannot be read. `download(artifact_uri, dst_dir)`
    fetches one artifact file (default: MLflow's `download_artifacts` with this process's credentials)."""
    download = download or (lambda uri, dst: download_artifacts(artifact_uri=uri, dst_path=dst,
                                                                 tracking_uri=client.tracking_uri))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            location = client.get_model_version_download_uri(name, version).rstrip("/")
            path = download(f"{location}/MLmodel", tmp)
            with open(path) as f:
                mlmodel = yaml.safe_load(f) or {}
        except (MlflowException, OSError, yaml.YAMLError) as e:
            if lost_contact(e):  # MLflow stopped answering: an outage, not a model without a signature
                raise
            return None, f"the version's MLmodel file could not be read: {getattr(e, 'message', e)}"
    raw = mlmodel.get("signature")
    if not raw:
        return None, None
    return {key: json.loads(raw[key]) if isinstance(raw.get(key), str) else raw.get(key)
            for key in ("inputs", "outputs", "params")}, None


def input_example(client: MlflowClient, name: str, version: str):
    """The input example logged with the version (`input_example=` when it was logged), as MLflow's
    own loader reads it (a DataFrame for tabular models), or None when it has none or it cannot be read."""
    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as tmp:
        try:
            location = client.get_model_version_download_uri(name, version).rstrip("/")
            model = Model.load(download_artifacts(artifact_uri=f"{location}/MLmodel", dst_path=tmp,
                                                  tracking_uri=client.tracking_uri))
            saved = model.saved_input_example_info
            if not saved or not saved.get("artifact_path"):
                return None
            download_artifacts(artifact_uri=f"{location}/{saved['artifact_path']}", dst_path=tmp,
                               tracking_uri=client.tracking_uri)
            return model.load_input_example(tmp)
        except (MlflowException, OSError, ValueError, KeyError, TypeError) as e:
            if lost_contact(e):  # MLflow stopped answering: an outage, not a model without an example
                raise
            return None


def _iso(millis: int | None) -> str | None:
    if not millis:
        return None
    return format_time(datetime.fromtimestamp(millis / 1000, tz=UTC))


def _dataset_source(source: str | None) -> str:
    """The readable part of a dataset source (its URI or path; the raw text otherwise)."""
    try:
        parsed = json.loads(source or "")
    except ValueError:
        return source or ""
    if isinstance(parsed, dict):
        for key in ("uri", "url", "path", "table_name"):
            if parsed.get(key):
                return str(parsed[key])
    return source or ""


def _run_facts(client: MlflowClient, run) -> tuple[dict, list[dict]]:
    info = run.info
    try:
        experiment_name = client.get_experiment(info.experiment_id).name
    except MlflowException:
        experiment_name = None
    url = None
    if client.tracking_uri.startswith(("http://", "https://")):
        url = f"{client.tracking_uri.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{info.run_id}"
    lineage = {"run_id": info.run_id, "run_name": info.run_name, "status": info.status,
               "start_time": _iso(info.start_time), "user": info.user_id or run.data.tags.get("mlflow.user"),
               "experiment_id": info.experiment_id, "experiment_name": experiment_name, "url": url}
    datasets = []
    for item in (run.inputs.dataset_inputs if run.inputs else None) or []:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), None)
        d = item.dataset
        datasets.append({"name": d.name, "digest": d.digest, "source_type": d.source_type,
                         "source": _dataset_source(d.source), "context": context})
    return lineage, datasets


def version_facts(client: MlflowClient, mv, model_tags: dict[str, str], download=None) -> dict:
    """Everything the gates and the card read about one version, as JSON-serializable values."""
    sig, problem = signature(client, mv.name, mv.version, download)
    facts = {"model": mv.name, "version": str(mv.version), "source": mv.source, "run_id": mv.run_id,
             "tags": dict(mv.tags), "model_tags": dict(model_tags), "metrics": {}, "params": {},
             "signature": sig, "signature_problem": problem, "run": None, "datasets": []}
    if mv.run_id:
        run = client.get_run(mv.run_id)
        facts["metrics"] = dict(run.data.metrics)
        facts["params"] = dict(run.data.params)
        facts["run"], facts["datasets"] = _run_facts(client, run)
    return facts
