"""REST API of the jupyter server extension, under /mlplatform/api (documented in openapi.yaml).

    GET    models                          registered models, versions, aliases
    GET    models/<name>/history           the promotion audit trail
    GET    promote/<name>/<version>        the gate report (changes nothing)
    POST   promote/<name>/<version>        promote (409 with the report when a gate fails)
    POST   rollback/<name>                 move the alias back
    GET    serving                         every deployment's status
    GET    serving/<name>                  one deployment's status
    PUT    serving/<name>                  deploy or replace (202: it goes on in the background)
    DELETE serving/<name>                  remove the deployment
    POST   serving/<name>/predict          {"rows": ...} → {"predictions": [...]}
    POST   serving/<name>/generate         {"prompt": ..., "max_tokens": n} → {"generations": [...]}
    GET    spark                           the user's applications, newest first
    POST   spark                           submit (201, Location: spark/<app_id>)
    GET    spark/<app_id>                  status
    GET    spark/<app_id>/logs?tail=N      the driver log's tail
    DELETE spark/<app_id>                  cancel
    GET    openapi.json                    the OpenAPI document

Decisions: a deployment is a resource the client names (a DNS label that becomes its endpoint), so
it is created and replaced with PUT, idempotently; a Spark application's id is made by the server
(`<name>-<8 hex digits>`), so jobs are created with POST to the collection. DELETE of an application
stops it but keeps its record, so its status (CANCELLED) and logs stay readable, as after a
`kubectl delete` of a job whose history the operator keeps. predict and generate are POST actions on
the deployment: they change nothing, but take a body. Every body is a JSON object whose fields are
the Python API's keyword arguments; an unknown field is refused (400 naming it and listing the
allowed ones) rather than ignored, so a typo never deploys defaults silently. Each verb is
authenticated and authorized on the resource "mlplatform"; the Python APIs block, so they run in a
thread. Errors are JSON `{"message": ...}` with the API error's status (see base.py).
"""

from __future__ import annotations

import json
from importlib import resources

import yaml
from jupyter_server.auth.decorator import authorized
from tornado import web

from . import registry, serving, spark
from .base import AUTH_RESOURCE, PREFIX, MLPlatformHandler, Refused

__all__ = ["AUTH_RESOURCE", "PREFIX", "MLPlatformHandler", "Refused", "routes"]


class OpenAPIHandler(MLPlatformHandler):
    @web.authenticated
    @authorized
    async def get(self):
        spec = yaml.safe_load(resources.files("mlplatform").joinpath("openapi.yaml").read_text())
        self.finish(json.dumps(spec))


def routes() -> list[tuple]:
    name, app_id = r"(?P<name>[^/]+)", r"(?P<app_id>[^/]+)"
    return [
        (rf"{PREFIX}/models", registry.ModelsHandler),
        (rf"{PREFIX}/models/{name}/history", registry.HistoryHandler),
        (rf"{PREFIX}/promote/{name}/(?P<version>[^/]+)", registry.PromotionHandler),
        (rf"{PREFIX}/rollback/{name}", registry.RollbackHandler),
        (rf"{PREFIX}/serving", serving.DeploymentsHandler),
        (rf"{PREFIX}/serving/{name}", serving.DeploymentHandler),
        (rf"{PREFIX}/serving/{name}/predict", serving.PredictHandler),
        (rf"{PREFIX}/serving/{name}/generate", serving.GenerateHandler),
        (rf"{PREFIX}/spark", spark.ApplicationsHandler),
        (rf"{PREFIX}/spark/{app_id}", spark.ApplicationHandler),
        (rf"{PREFIX}/spark/{app_id}/logs", spark.LogsHandler),
        (rf"{PREFIX}/openapi.json", OpenAPIHandler),
    ]
