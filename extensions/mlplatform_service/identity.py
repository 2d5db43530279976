"""Who calls the service, as the hub says: the user behind a token or login cookie, their teams and
admin flag (read with the service's own token, which may read users and their groups), and the S3
credentials of the caller's running server (asked from the hub with the caller's own token, so the
service reads a model's artifacts with exactly the caller's rights)."""

from __future__ import annotations

import json
from urllib.parse import quote

from mlplatform_core.catalog import Catalog
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .promotion import Caller


async def hub_get(hub_auth, path: str, token: str) -> dict:
    """GET the hub's API as `token`; HTTPError with the hub's message when it refuses."""
    try:
        response = await AsyncHTTPClient().fetch(f"{hub_auth.api_url}{path}", request_timeout=10,
                                                 headers={"Authorization": f"token {token}"})
    except HTTPClientError as e:
        body = e.response.body.decode(errors="replace") if e.response is not None else ""
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body[:200]
        raise web.HTTPError(e.code if e.code in (401, 403, 404, 409) else 502,
                            f"the hub refused {path.split('?')[0]}: {message}") from None
    except OSError as e:
        raise web.HTTPError(503, f"the hub is unreachable: {type(e).__name__}") from None
    return json.loads(response.body)


async def caller_of(handler, catalog: Catalog, user_model: dict, *, server: str | None = None) -> Caller:
    """The Caller of a request; with `server`, its artifact reads use that server's S3 credentials."""
    name = user_model["name"]
    user = await hub_get(handler.hub_auth, f"/users/{quote(name, safe='')}", handler.hub_auth.api_token)
    teams = tuple(catalog.teams_of(user.get("groups") or []))
    download = None
    token = request_token(handler)
    if server is not None and token:
        credentials = await hub_get(handler.hub_auth, f"/mlplatform/s3-credentials/{quote(name, safe='')}"
                                                      f"?server={quote(server, safe='')}", token)
        download = s3_download(credentials)
    return Caller(name=name, teams=teams, admin=bool(user.get("admin")), download=download)


def request_token(handler) -> str | None:
    scheme, _, value = handler.request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("token", "bearer") and value.strip() else None


def s3_download(credentials: dict):
    """A `download(artifact_uri, dst_dir)` reading artifacts in S3 with `credentials` (the hub's
    credential-process answer: AccessKeyId, SecretAccessKey, SessionToken). `runs:/` and `models:/` URIs
    are resolved through MLflow first; what is not in S3 is read with MLflow's own client."""
    def download(uri: str, dst: str) -> str:
        # MLflow imported when first used (~120 MB the idle service does without; the same below).
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
        from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

        if uri.startswith("runs:/"):
            uri = RunsArtifactRepository.get_underlying_uri(uri)
        elif uri.startswith("models:/"):
            uri = ModelsArtifactRepository.get_underlying_uri(uri)
        if not uri.startswith("s3://"):
            return download_artifacts(artifact_uri=uri, dst_path=dst)
        directory, _, file = uri.rstrip("/").rpartition("/")
        repo = S3ArtifactRepository(directory, access_key_id=credentials["AccessKeyId"],
                                    secret_access_key=credentials["SecretAccessKey"],
                                    session_token=credentials["SessionToken"])
        try:
            return repo.download_artifacts(file, dst)
        except (MlflowException, OSError):
            raise
        except Exception as e:  # botocore's: the caller's credentials do not reach it (a gate fails, saying so)
            raise OSError(f"{uri} could not be read with {credentials.get('AccessKeyId', '?')[:4]}…'s S3 "
                          f"credentials: {type(e).__name__}: {e}") from None
    return download
