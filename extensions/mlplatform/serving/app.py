"""The one generic Ray Serve deployment: any MLflow model behind `/predict` (and `/generate`).

Every serving application of the platform runs it (`import_path: mlplatform.serving.app:build`).
What it serves comes from the application's `args`, written by `mlplatform.serving.spec`:

    model_uri             models:/<name>/<version> (the alias is resolved when deploying)
    model_version         the version, echoed in the `X-Model-Version` header of every answer
    requested_uri         what the user asked for (models:/<name>@<alias>), shown by /health
    task                  "predict", "text-generation", or null: read from the model's metadata

and how it batches from the deployment's `user_config` (changed in place, without a restart):

    max_batch_size        requests scored together (`@serve.batch`)
    batch_wait_timeout_s  how long a batch waits to fill
    max_tokens_limit      the largest `max_tokens` /generate accepts

Routes, under the application's route prefix (`/<name>`):

    POST /predict    JSON records or pandas split orient, optional "params" → {"predictions": [...]}
    POST /generate   text-generation models: {"prompt" | "prompts", "max_tokens"} → {"generations": [...]}
    GET  /health     {"status": "ok", "model_uri": ..., "model_version": ..., "task": ...}

A warm spare (the local backend's, local.py) runs this deployment without a model (`args`: `{"spare": true}`):
its replica imports what serving a model takes (PRELOAD) and answers 503 until it is taken over: the deployment's
`user_config` then carries the model (`model`: the args above) and the replica's environment (`env`: what the
application's runtime_env would hold, the secrets file's path among it), and `reconfigure` sets the environment,
reads the secrets and loads the model, in the process that was already running.

Bad requests get a 4xx with `{"message": ...}`. A new model version is new `args`: Serve replaces
the replicas by a rolling update that starts the new ones first (`max_surge_percent`), so the old
version answers until the new one is ready, and keeps answering if the new one fails to load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from .payload import (PayloadError, cast_together, concatenated, dumps, jsonable, layout, parse_generate,
                      parse_predict_request, split_outputs)
from .spec import SECRETS_FILE_VARIABLE

log = logging.getLogger("ray.serve")

TEXT_GENERATION_TASKS = {"text-generation", "llm/v1/completions"}
# What a spare imports while it waits: MLflow's pyfunc loader and, for the platform's usual model (MLflow 3 saves
# scikit-learn models with skops), the sklearn flavor and skops.io, whose import scans sklearn's public types.
# About 5 CPU-seconds of a fresh replica's start, and ~150 MB of its memory.
PRELOAD = ("mlflow.pyfunc", "mlflow.sklearn", "sklearn", "skops.io")


@dataclass(frozen=True)
class LoadedModel:
    uri: str
    version: str
    requested_uri: str
    task: str
    pyfunc: Any
    transformers: bool

    @property
    def schema(self) -> Any:
        """The input schema /predict casts rows to, as `mlflow models serve` does (None: no cast)."""
        metadata = self.pyfunc.metadata
        if getattr(metadata, "_is_signature_from_type_hint", lambda: False)():
            return None  # MLflow's scoring server passes such inputs on as they are, too
        return metadata.get_input_schema()

    def info(self) -> dict:
        inputs = self.pyfunc.metadata.get_input_schema()
        return {"model_uri": self.requested_uri, "served_uri": self.uri, "model_version": self.version,
                "task": self.task, "input_columns": inputs.input_names() if inputs is not None else None}


def load(config: dict) -> LoadedModel:
    """Load `config["model_uri"]` with mlflow.pyfunc (MLFLOW_TRACKING_URI from the environment)."""
    import mlflow.pyfunc

    # suppress_warnings: MLflow's check of the model's pip requirements against this environment scans
    # every installed distribution (0.7 s CPU of a replica's ~9 s start); it runs only when the load fails.
    try:
        model = mlflow.pyfunc.load_model(config["model_uri"], suppress_warnings=True)
    except Exception:
        _warn_requirement_mismatches(config["model_uri"])
        raise
    flavors = model.metadata.flavors
    declared = flavors.get("transformers", {}).get("task") or (model.metadata.metadata or {}).get("task")
    task = config.get("task") or ("text-generation" if declared in TEXT_GENERATION_TASKS else "predict")
    return LoadedModel(uri=config["model_uri"], version=str(config.get("model_version", "")),
                       requested_uri=config.get("requested_uri") or config["model_uri"], task=task,
                       pyfunc=model, transformers="transformers" in flavors)


def _warn_requirement_mismatches(model_uri: str) -> None:
    """Log how the model's pip requirements differ from this environment (why a load may fail)."""
    try:
        from mlflow.pyfunc import get_model_dependencies
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        with open(get_model_dependencies(model_uri, format="pip")) as f:
            requirements = [line.strip() for line in f if line.strip() and not line.startswith(("#", "-"))]
        warn_dependency_requirement_mismatches(requirements)
    except Exception:  # noqa: BLE001 — best effort: the load's own error is the one to tell
        log.debug("could not compare the requirements of %s", model_uri, exc_info=True)


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _scoring_error(e: Exception) -> HTTPError:
    """An exception of the model's predict as an HTTP error: bad input is the client's 400."""
    from mlflow.exceptions import MlflowException

    if isinstance(e, MlflowException):
        status = e.get_http_status_code()
        return HTTPError(status if 400 <= status < 600 else 500, e.message)
    if isinstance(e, (ValueError, KeyError, TypeError)):
        return HTTPError(400, f"the model could not score these rows: {type(e).__name__}: {e}")
    return HTTPError(500, f"the model failed: {type(e).__name__}: {e}")


@dataclass
class Answer:
    """One answer: HTTP status, JSON document, headers."""

    status: int
    doc: dict
    headers: dict[str, str] = field(default_factory=dict)


@serve.deployment(name="Model", max_ongoing_requests=64)
class ModelServer:
    """One model version, and its application's ingress. In a rollout the champion and the candidate are each an
    application of their own, and the rollout gateway (gateway.py) splits and mirrors between them."""

    def __init__(self, model: dict | None):
        self.model: LoadedModel | None = None
        self.max_tokens_limit = 4096
        if model and model.get("model_uri"):
            self._load(model)
        else:  # a spare: the model comes with the user_config that takes it over (reconfigure)
            _preload()

    def _load(self, model: dict) -> None:
        # Credentials for MLflow's artifacts (the local backend keeps them out of the Serve config).
        secrets = os.environ.get(SECRETS_FILE_VARIABLE)
        if secrets and os.path.exists(secrets):
            with open(secrets) as f:
                os.environ.update(json.load(f))
        self.model = load(model)
        log.info("serving %s (version %s, task %s)", self.model.uri, self.model.version, self.model.task)

    def reconfigure(self, config: dict) -> None:
        model = config.get("model")
        if model and self.model is not None and self.model.uri != model.get("model_uri"):
            # Never a second model (nor a second team's credentials) in one process: Serve starts a new replica.
            raise RuntimeError(f"this replica serves {self.model.uri}; {model.get('model_uri')} needs a new one")
        if model and self.model is None:
            started = time.perf_counter()
            os.environ.update(config.get("env") or {})  # what a runtime_env would have set
            self._load(model)  # an error here fails the replica: Serve says why in the deployment's status
            log.info("took over as %s in %.2f s", model.get("model_uri"), time.perf_counter() - started)
        self.max_tokens_limit = int(config.get("max_tokens_limit", 4096))
        for method in (self.predict_batch, self.generate_batch):
            method.set_max_batch_size(int(config.get("max_batch_size", 32)))
            method.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.002)))

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        path = "/" + path.strip("/")
        body = await request.body() if request.method == "POST" else b""
        answer = await self.respond(request.method, path, body)
        return Response(dumps(answer.doc), status_code=answer.status, media_type="application/json",
                        headers=answer.headers)

    async def respond(self, method: str, path: str, body: bytes) -> Answer:
        """The answer of this model to one request."""
        model = self.model
        if model is None:
            return Answer(503, {"message": "this replica has no model yet (a spare waiting to be deployed)"})
        try:
            if path in ("/predict", "/generate") and method != "POST":
                raise HTTPError(405, f"{path} takes POST with a JSON body")
            if path == "/predict":
                request = parse_predict_request(body)  # cast to the signature per batch, in predict_batch
                doc = {"predictions": self._raise(await self.predict_batch(request))}
            elif path == "/generate":
                if model.task != "text-generation":
                    raise HTTPError(404, f"/generate is for text-generation models; {model.requested_uri} is a "
                                         f"{model.task} model: use POST /predict")
                req = parse_generate(body, self.max_tokens_limit)
                doc = {"generations": self._raise(await self.generate_batch(req))}
            elif path in ("/", "/health") and method == "GET":
                doc = {"status": "ok", **model.info()}
            else:
                raise HTTPError(404, f"no route {method} {path}; routes: POST /predict, "
                                     "POST /generate (text-generation models), GET /health")
            status = 200
        except PayloadError as e:
            status, doc = 400, {"message": str(e)}
        except HTTPError as e:
            status, doc = e.status, {"message": str(e)}
        except Exception as e:  # a bug of ours or the model's: still a JSON answer, and the log has it
            log.exception("%s %s failed", method, path)
            status, doc = 500, {"message": f"internal error: {type(e).__name__}: {e}"}
        return Answer(status, doc, {"X-Model-Version": model.version})

    @staticmethod
    def _raise(result):
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def predict_batch(self, requests: list[tuple[pd.DataFrame, dict | None]]) -> list:
        """Cast to the signature and score the rows of many requests (each its rows and params) with one
        call per layout (columns and dtypes) and params; a request with a refused value gets its own 400,
        and one whose rows break the shared predict is scored alone, so one bad request never fails the
        others."""
        model, schema = self.model, self.model.schema
        frames = [frame for frame, _ in requests]
        results: list = [None] * len(frames)
        groups: dict[tuple, list[int]] = {}
        for i, (frame, params) in enumerate(requests):
            key = json.dumps(params, sort_keys=True, default=str) if params is not None else None
            groups.setdefault((layout(frame), key), []).append(i)
        for members in groups.values():
            params = requests[members[0]][1]
            parts = [frames[i] for i in members]
            if schema is None:
                joined = concatenated(parts)
            else:
                joined, refusals = cast_together(parts, schema)
                for i, refusal in zip(members, refusals):
                    results[i] = refusal
                members = [i for i, refusal in zip(members, refusals) if refusal is None]
                if not members:
                    continue
            try:
                outputs = await asyncio.to_thread(model.pyfunc.predict, joined, params=params)
                for i, rows in zip(members, split_outputs(outputs, [len(frames[i]) for i in members])):
                    results[i] = rows
            except Exception as e:
                if len(members) == 1:
                    results[members[0]] = _scoring_error(e)
                    continue
                for i in members:
                    try:
                        single = frames[i] if schema is None else cast_together([frames[i]], schema)[0]
                        outputs = await asyncio.to_thread(model.pyfunc.predict, single, params=params)
                        results[i] = split_outputs(outputs, [len(frames[i])])[0]
                    except Exception as alone:
                        results[i] = _scoring_error(alone)
        return results

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def generate_batch(self, requests: list) -> list:
        """Generate for many requests; those with the same max_tokens and params share one call."""
        model = self.model
        results: list = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps([req.max_tokens, req.params], sort_keys=True, default=str), []).append(i)
        for members in groups.values():
            prompts = [p for i in members for p in requests[i].prompts]
            first = requests[members[0]]
            limit = "max_new_tokens" if model.transformers else "max_tokens"
            params = {**first.params, limit: first.max_tokens}
            inputs = prompts if model.transformers else pd.DataFrame({"prompt": prompts})
            try:
                outputs = await asyncio.to_thread(model.pyfunc.predict, inputs, params=params)
                texts = split_outputs([_text(o) for o in jsonable(outputs)],
                                      [len(requests[i].prompts) for i in members])
            except Exception as e:
                texts = [_scoring_error(e)] * len(members)
            for i, generated in zip(members, texts):
                results[i] = generated
        return results


def _preload() -> None:
    started = time.perf_counter()
    import importlib

    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except ImportError:  # not installed here: the models that need it cannot load either
            log.info("spare: %s is not installed", module)
    log.info("spare: imported %s in %.2f s", ", ".join(PRELOAD), time.perf_counter() - started)


def _text(output: Any) -> Any:
    """One generation as text: pipelines answer strings or {"generated_text": ...}."""
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    if isinstance(output, dict):
        for key in ("generated_text", "text", "generation", "output"):
            if key in output:
                return output[key]
    return output


MODEL_ARGS = ("model_uri", "model_version", "requested_uri", "task")


def build(args: dict):
    """The application for `args` (see the module docstring): one model, or a spare without one."""
    if args.get("spare"):
        return ModelServer.bind(None)
    return ModelServer.bind({k: args.get(k) for k in MODEL_ARGS})
