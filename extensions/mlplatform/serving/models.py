"""Which registered model version a `models:/` URI means, asked of the MLflow registry."""

from __future__ import annotations

from dataclasses import dataclass

from ..mlflow_health import MlflowUnavailable, lost_contact
from .errors import ModelForbidden, ModelNotFound
from .spec import MODEL_URI


@dataclass(frozen=True)
class ResolvedModel:
    requested_uri: str  # models:/iris@champion
    name: str
    version: str
    run_id: str | None
    tracking_uri: str  # where it was found: the replicas load it from there

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve(model_uri: str, client=None) -> ResolvedModel:
    """The version behind `models:/<name>@<alias>` or `models:/<name>/<version>`; `ModelNotFound`
    names what exists instead; MlflowUnavailable (503) when MLflow stops answering part-way. `client`:
    an `MlflowClient` (default: MLFLOW_TRACKING_URI's)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    match = MODEL_URI.fullmatch(model_uri)
    if match is None:
        raise ModelNotFound(f"{model_uri!r} is not a registered model URI; allowed: 'models:/<name>@<alias>' "
                            "or 'models:/<name>/<version>'")
    name, alias, version = match["name"], match["alias"], match["version"]
    client = client or MlflowClient()
    try:
        return _resolve(client, model_uri, name, alias, version)
    except MlflowException as e:
        cause = lost_contact(e)
        if cause is None:
            raise
        raise MlflowUnavailable(f"MLflow at {client.tracking_uri} stopped answering ({cause}) while resolving "
                                f"{model_uri}; nothing was deployed. Try again when it is back") from e


def _resolve(client, model_uri: str, name: str, alias: str | None, version: str | None) -> ResolvedModel:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as e:
        if e.get_http_status_code() in (401, 403):  # MLflow's access control: nothing is deployed
            raise ModelForbidden(f"MLflow refuses registered model {name!r} to this server's user "
                                 f"({e.get_http_status_code()}: {e.message.strip()[:200]}); a team serves its own "
                                 "models and those other teams share with it (mlflow_other_teams in the catalog)"
                                 ) from None
        if e.get_http_status_code() != 404:
            raise
        names = [m.name for m in client.search_registered_models(max_results=20)]
        raise ModelNotFound(f"registered model {name!r} does not exist in {client.tracking_uri}; "
                            f"registered models: {', '.join(names) if names else 'none'}") from None
    if alias is not None:
        if alias not in model.aliases:
            have = ", ".join(f"@{a} → version {v}" for a, v in sorted(model.aliases.items())) or "none"
            raise ModelNotFound(f"model {name!r} has no alias {alias!r}; its aliases: {have}")
        version = str(model.aliases[alias])
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as e:
        if e.get_http_status_code() != 404:
            raise
        versions = sorted((int(v.version) for v in client.search_model_versions(f"name = '{name}'")), reverse=True)
        raise ModelNotFound(f"model {name!r} has no version {version}; its versions: "
                            f"{', '.join(map(str, versions[:20])) or 'none'}") from None
    return ResolvedModel(requested_uri=model_uri, name=name, version=str(mv.version), run_id=mv.run_id,
                         tracking_uri=client.tracking_uri)
