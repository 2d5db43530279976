"""Model serving from the notebook: `deploy`, `status`, `delete`, `predict` (api.py), the validated
request and the Serve / RayService builders (spec.py), the generic Serve deployment (app.py) and the
local backend (local.py)."""

from .api import backend, delete, deploy, deployments, generate, predict, status, wait_until_settled
from .backend import DELETING, DEPLOYING, FAILED, RUNNING, STARTING, STATES, SUBMITTED, ServingBackend
from .errors import (
                     BackendUnavailable,
                     DeploymentNotFound,
                     InvalidServingRequest,
                     ModelForbidden,
                     ModelNotFound,
                     PredictionFailed,
                     ServingConflict,
                     ServingError,
)
from .local import LocalRayConfig, LocalServing
from .spec import ServingRequest, ray_service, serve_application, serve_config, serving_request

__all__ = [
    "backend", "delete", "deploy", "deployments", "generate", "predict", "status", "wait_until_settled",
    "DELETING", "DEPLOYING", "FAILED", "RUNNING", "STARTING", "STATES", "SUBMITTED", "ServingBackend",
    "BackendUnavailable", "DeploymentNotFound", "InvalidServingRequest", "ModelForbidden", "ModelNotFound",
    "PredictionFailed",
    "ServingConflict", "ServingError", "LocalRayConfig", "LocalServing",
    "ServingRequest", "ray_service", "serve_application", "serve_config", "serving_request",
]
