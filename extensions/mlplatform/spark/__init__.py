"""Spark jobs from the notebook: `submit`, `status`, `logs`, `output`, `cancel` (api.py), a validated job
(job.py), the SparkApplication builder (spec.py) and the local backend (local.py)."""

from .api import applications, backend, cancel, logs, output, status, submit
from .backend import (
                      CANCELLED,
                      COMPLETED,
                      FAILED,
                      RUNNING,
                      STATES,
                      SUBMITTED,
                      TERMINAL_STATES,
                      SparkBackend,
                      SparkBackendError,
                      UnknownApplicationError,
)
from .job import SparkJob, SparkJobError
from .local import LocalSparkBackend
from .spec import spark_application

__all__ = [
    "applications", "backend", "cancel", "logs", "output", "status", "submit",
    "CANCELLED", "COMPLETED", "FAILED", "RUNNING", "STATES", "SUBMITTED", "TERMINAL_STATES",
    "SparkBackend", "SparkBackendError", "UnknownApplicationError",
    "SparkJob", "SparkJobError", "LocalSparkBackend", "spark_application",
]
