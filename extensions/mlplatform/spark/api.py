"""The Python API of Spark jobs, on the backend the platform chose (MLPLATFORM_BACKEND).

    from mlplatform import spark
    app = spark.submit("wordcount", "wordcount.py", arguments=["data.txt", "counts"], executors=2)
    spark.status(app["app_id"])["state"]      # SUBMITTED, RUNNING, COMPLETED, FAILED, CANCELLED
    print(spark.logs(app["app_id"], tail=50)["text"])     # the driver log: Spark's and the job's lines
    print(spark.output(app["app_id"], tail=50)["text"])   # the job's own output only
    spark.cancel(app["app_id"])

Every function answers plain JSON-serializable dicts (see `backend.py`); the REST API and the
widget call these. Bad input raises SparkJobError (a ValueError naming the field) before anything
starts; an unknown id raises UnknownApplicationError (a LookupError).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from mlplatform_core.contract import PlatformEnvironment

from ..environment import read_environment
from .backend import SparkBackend, SparkBackendError
from .job import SparkJob
from .local import LocalSparkBackend

BACKENDS = ("local", "kubernetes")


def backend(environ: Mapping[str, str] | None = None) -> SparkBackend:
    """The backend named by MLPLATFORM_BACKEND in `environ` (default: this process's environment);
    `local` when it is unset (outside the platform). Local jobs start from that same environment."""
    if environ is not None:  # another environment than this process's: its own backend, not cached
        return _make(read_environment(environ), dict(environ))
    return _cached(read_environment())


@lru_cache(maxsize=8)
def _cached(platform: PlatformEnvironment) -> SparkBackend:
    return _make(platform, None)


def _make(platform: PlatformEnvironment, environ: dict[str, str] | None) -> SparkBackend:
    if platform.backend == "local":
        from ..gitops import GitOps

        return LocalSparkBackend(environ=environ, user=platform.user or None,
                                 gitops=GitOps.for_environment(platform, environ, required=False))
    if platform.backend == "kubernetes":  # imported here: the Kubernetes client is slow to import and unused locally
        from ..gitops import GitOps, GitOpsRefused
        from .kubernetes import KubernetesSparkBackend, KubernetesSparkConfig

        try:
            gitops = GitOps.for_environment(platform, environ)
        except GitOpsRefused as e:
            raise SparkBackendError(str(e)) from None
        return KubernetesSparkBackend(KubernetesSparkConfig.for_environment(platform), environment=platform,
                                      gitops=gitops)
    raise SparkBackendError(f"MLPLATFORM_BACKEND is {platform.backend!r}; allowed: {', '.join(map(repr, BACKENDS))}")


def submit(name: str, main_file: str, *, arguments: Sequence[Any] = (), executors: int = 1,
           executor_cores: int = 1, executor_memory: str = "1g", driver_cores: int = 1,
           driver_memory: str = "1g", conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Submit a PySpark application; answers its status (state SUBMITTED, `app_id`).

    `name` is a DNS label (at most 47 characters); `main_file` a .py file, relative to the current
    directory (in a notebook: the notebook's folder) or absolute; memory sizes are Spark's ('512m',
    '2g'); `conf` holds further `spark.*` properties."""
    job = SparkJob(name=name, main_file=main_file, arguments=arguments, executors=executors,
                   executor_cores=executor_cores, executor_memory=executor_memory, driver_cores=driver_cores,
                   driver_memory=driver_memory, conf=conf)
    return backend().submit(job)


def status(app_id: str) -> dict[str, Any]:
    """The application's state, UI link while it runs, error line when it failed."""
    return backend().status(app_id)


def logs(app_id: str, tail: int | None = 100) -> dict[str, Any]:
    """The last `tail` lines of the driver log (None: all): {"app_id", "text", "lines", "truncated"}."""
    return backend().logs(app_id, tail=tail)


def output(app_id: str, tail: int | None = 100) -> dict[str, Any]:
    """The last `tail` lines of the program's own output (prints, warnings, tracebacks; no Spark log4j
    records), shaped as `logs` answers."""
    return backend().output(app_id, tail=tail)


def cancel(app_id: str) -> dict[str, Any]:
    """Stop the application (CANCELLED); a finished one stays as it is. Answers its status."""
    return backend().cancel(app_id)


def applications() -> list[dict[str, Any]]:
    """The user's applications, newest first."""
    return backend().applications()
