"""GitOps mode of the serving backends (mlplatform/gitops.py): the commit's message, and the platform service's
refusals as the serving API's errors. The Kubernetes backend commits instead of applying; the local backend
commits the RayService the Kubernetes backend would apply, then serves on the local head as before."""

from __future__ import annotations

from .errors import BackendUnavailable, DeploymentNotFound, InvalidServingRequest, ServingConflict, ServingError
from .spec import ServingRequest
from ..gitops import GitOpsRefused


def deploy_message(request: ServingRequest, model_version: str) -> str:
    """Why the commit of a deploy: the model and its version, the replicas and their GPUs."""
    replicas = f"{request.min_replicas}-{request.max_replicas} replicas" if request.max_replicas \
        else f"{request.replicas} replica(s)"
    gpus = f" with {request.gpus:g} GPU(s) each" if request.gpus else ""
    return f"{request.model_uri} (version {model_version}), {replicas}{gpus}"


def committed(call, *args, **kwargs) -> dict:
    """A call of the platform service's GitOps API (mlplatform.gitops.GitOps); its refusal as a ServingError
    with the service's status and message (nothing was committed)."""
    try:
        return call(*args, **kwargs)
    except GitOpsRefused as refused:
        error = {400: lambda m: InvalidServingRequest([("object", m)]), 404: DeploymentNotFound,
                 409: ServingConflict, 503: BackendUnavailable}.get(refused.status, ServingError)(str(refused))
        if type(error) is ServingError:
            error.status_code = refused.status
        raise error from None
