"""The environment contract, read on the notebook side (the hub side writes it: hub_config/environment.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class NotOnPlatformError(RuntimeError):
    """Raised outside a server started by the platform's hub."""


@dataclass(frozen=True)
class PlatformEnvironment:
    user: str
    team: str
    namespace: str
    backend: str
    profile: str
    gpu_type: str | None
    gpu_count: int
    mlflow_tracking_uri: str
    s3_endpoint: str
    s3_bucket: str
    s3_prefix: str
    s3_team_prefix: str

    @property
    def s3_user_uri(self) -> str:
        return f"s3://{self.s3_bucket}/{self.s3_prefix}"

    @property
    def s3_team_uri(self) -> str:
        return f"s3://{self.s3_bucket}/{self.s3_team_prefix}"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> PlatformEnvironment:
        env = os.environ if environ is None else environ
        missing = [k for k in ("MLPLATFORM_USER", "MLPLATFORM_TEAM", "MLPLATFORM_BACKEND") if not env.get(k)]
        if missing:
            raise NotOnPlatformError(f"{', '.join(missing)} not set: this is not a server started by the "
                                     "mlplatform hub (see the README's environment contract)")
        return cls(
            user=env["MLPLATFORM_USER"],
            team=env["MLPLATFORM_TEAM"],
            namespace=env.get("MLPLATFORM_NAMESPACE", ""),
            backend=env["MLPLATFORM_BACKEND"],
            profile=env.get("MLPLATFORM_PROFILE", ""),
            gpu_type=env.get("MLPLATFORM_GPU_TYPE") or None,
            gpu_count=int(env.get("MLPLATFORM_GPU_COUNT") or 0),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", ""),
            s3_endpoint=env.get("MLPLATFORM_S3_ENDPOINT", ""),
            s3_bucket=env.get("MLPLATFORM_S3_BUCKET", ""),
            s3_prefix=env.get("MLPLATFORM_S3_PREFIX", ""),
            s3_team_prefix=env.get("MLPLATFORM_S3_TEAM_PREFIX", ""),
        )


def current() -> PlatformEnvironment:
    """The platform environment of this notebook server."""
    return PlatformEnvironment.from_environ()
