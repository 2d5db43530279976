"""Model serving over REST: each route calls `mlplatform.serving`, whose errors carry their status
(InvalidServingRequest 400 with every problem, ModelNotFound and DeploymentNotFound 404,
ServingConflict 409, BackendUnavailable 503, PredictionFailed the endpoint's own status)."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import serving
from .base import MLPlatformHandler, Refused

# The keyword arguments of serving.deploy that a client may set; the name is the URL's.
DEPLOY_FIELDS = ("model_uri", "replicas", "min_replicas", "max_replicas", "cpus", "gpus", "max_batch_size",
                 "batch_wait_timeout_s", "max_ongoing_requests", "task")
PREDICT_FIELDS = ("rows",)
GENERATE_FIELDS = ("prompt", "max_tokens")


class ServingHandler(MLPlatformHandler):
    def refusal(self, error):
        if isinstance(error, serving.InvalidServingRequest):
            problems = [{"field": f, "message": m} for f, m in error.problems]
            return Refused(400, str(error), problems=problems, field=error.problems[0][0])
        if isinstance(error, serving.ServingError):
            return Refused(error.status_code, str(error))
        return None


class DeploymentsHandler(ServingHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.reply({"deployments": await self.call(serving.deployments)})


class DeploymentHandler(ServingHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str):
        self.reply(await self.call(serving.status, name))

    @web.authenticated
    @authorized
    async def put(self, name: str):
        """Deploy, or replace what `name` serves. 202: Serve goes on in the background; poll GET."""
        body = self.body(DEPLOY_FIELDS, required=("model_uri",))
        self.reply(await self.call(serving.deploy, name, **body), status=202)

    @web.authenticated
    @authorized
    async def delete(self, name: str):
        """Answers once the endpoint is gone."""
        self.reply(await self.call(serving.delete, name))


class PredictHandler(ServingHandler):
    @web.authenticated
    @authorized
    async def post(self, name: str):
        """{"rows": records or split orient} → {"predictions": [...]}, through the application's /predict."""
        rows = self.body(PREDICT_FIELDS, required=PREDICT_FIELDS)["rows"]
        self.reply({"predictions": await self.call(serving.predict, name, rows)})


class GenerateHandler(ServingHandler):
    @web.authenticated
    @authorized
    async def post(self, name: str):
        """{"prompt": text or [texts], "max_tokens": n} → {"generations": [...]}, through /generate."""
        body = self.body(GENERATE_FIELDS, required=("prompt",))
        prompt = body.pop("prompt")
        if not (isinstance(prompt, str) or isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)):
            raise Refused(400, f"prompt: {prompt!r} is not a text; allowed: a string or a list of strings",
                          field="prompt")
        self.reply({"generations": await self.call(serving.generate, name, prompt, **body)})
