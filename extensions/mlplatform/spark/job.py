"""A Spark job as the user asks for it, validated once for every backend.

`SparkJob(...)` checks and normalizes its fields on construction (and again on
`dataclasses.replace`), so a backend only ever sees a valid job. Bad input raises `SparkJobError`
naming the field, the value and what is allowed; the REST API answers it with 400.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlparse

from mlplatform_core.names import DNS_LABEL, MAX_SPARK_NAME

# The application id is `<name>-<8 hex digits>` (see `new_app_id`); on Kubernetes it is the
# SparkApplication's name and the operator adds "-ui-svc" for the UI service, which must stay a
# DNS label (63 characters): 47 + 9 + 7 = 63.
MAX_NAME_LENGTH = MAX_SPARK_NAME
NAME_RULE = (f"use lowercase letters, digits and '-', starting with a letter and ending with a letter or digit, "
             f"at most {MAX_NAME_LENGTH} characters (a DNS label, with room for the id the platform appends)")

# Spark's own size syntax (spark.driver.memory and friends), not Kubernetes quantities.
MEMORY = re.compile(r"^([0-9]+)([kmgt])b?$", re.IGNORECASE)
MEMORY_RULE = "a whole number followed by k, m, g or t, e.g. '512m' or '2g'"
_MIB = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
MIN_MEMORY_MIB = 512  # below ~450 MiB of heap Spark refuses to start ("System memory ... must be at least")

# Spark properties that a field of the job (or the backend) sets; setting them in `conf` is refused
# rather than silently winning or losing.
RESERVED_CONF = {
    "spark.app.name": "the field name",
    "spark.executor.instances": "the field executors",
    "spark.executor.cores": "the field executor_cores",
    "spark.executor.memory": "the field executor_memory",
    "spark.driver.cores": "the field driver_cores",
    "spark.driver.memory": "the field driver_memory",
    "spark.master": "the platform's backend",
    "spark.submit.deployMode": "the platform's backend",
    "spark.kubernetes.namespace": "the platform (your team's namespace)",
    "spark.kubernetes.container.image": "the platform (the catalog's Spark image)",
    "spark.kubernetes.authenticate.driver.serviceAccountName": "the platform",
}

# The conf policy: the Spark properties a user may set, an allow-list. They tune Spark inside the pods
# the platform defines (SQL, shuffle, memory, serialization, timeouts, the UI, event logs, S3A, extra
# Python files and packages); every other key is refused, above all `spark.kubernetes.*` (host path
# volumes, pod templates, images, service accounts, node selectors), `spark.executorEnv.*`, the
# `extraJavaOptions`/`extraClassPath` of the JVMs, `spark.dynamicAllocation.*` (executors beyond the
# field `executors`) and `spark.authenticate*`.
#
# This runs in the user's notebook, which the platform does not trust: on Kubernetes it is a
# convenience (a clear error before anything is submitted), not the wall. The wall is the team
# namespace: Pod Security `baseline` enforced (no privileged pod, host path or host namespace,
# whatever the SparkApplication says), RBAC (nothing outside the team's namespace) and its
# NetworkPolicies (hub_config/render: pod_security.py, teams.py, network.py).
ALLOWED_CONF_PREFIXES = (
    "spark.sql.", "spark.shuffle.", "spark.reducer.", "spark.memory.", "spark.io.compression.", "spark.broadcast.",
    "spark.kryo.", "spark.kryoserializer.", "spark.locality.wait", "spark.speculation", "spark.ui.",
    "spark.eventLog.", "spark.python.", "spark.hadoop.fs.s3a.", "spark.cleaner.", "spark.storage.",
    "spark.excludeOnFailure.",
)
ALLOWED_CONF_KEYS = frozenset({
    "spark.default.parallelism", "spark.serializer", "spark.rdd.compress", "spark.checkpoint.compress",
    "spark.driver.memoryOverhead", "spark.driver.memoryOverheadFactor", "spark.driver.maxResultSize",
    "spark.executor.memoryOverhead", "spark.executor.memoryOverheadFactor", "spark.executor.pyspark.memory",
    "spark.executor.heartbeatInterval", "spark.network.timeout", "spark.task.cpus", "spark.task.maxFailures",
    "spark.files", "spark.submit.pyFiles", "spark.jars", "spark.jars.packages", "spark.jars.repositories",
    "spark.jars.excludes", "spark.log.level",
})
ALLOWED_CONF_RULE = ("allowed: keys under " + ", ".join(p + "*" for p in ALLOWED_CONF_PREFIXES) + ", and "
                     + ", ".join(sorted(ALLOWED_CONF_KEYS)))


def conf_allowed(key: str) -> bool:
    """Whether users may set the Spark property `key` (the conf policy above)."""
    return key in ALLOWED_CONF_KEYS or key.startswith(ALLOWED_CONF_PREFIXES)


class SparkJobError(ValueError):
    """Bad input for a Spark job: `field` and `value` name what is wrong, the message says what is allowed."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value = field, value
        super().__init__(f"{field}: {value!r} {allowed}")


def _whole_number(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SparkJobError(name, value, f"is not allowed; use a whole number of at least {minimum}")
    if value < minimum:
        raise SparkJobError(name, value, f"is too small; use a whole number of at least {minimum}")
    return value


def memory_mib(value: str) -> float:
    """MiB of a Spark size string ('2g' → 2048)."""
    number, unit = MEMORY.fullmatch(value).groups()
    return int(number) * _MIB[unit.lower()]


def _memory(name: str, value: Any) -> str:
    if not isinstance(value, str) or not MEMORY.fullmatch(value.strip()):
        hint = ""
        if isinstance(value, str) and re.match(r"^\d+[KMGT]i$", value.strip()):
            hint = f" (Kubernetes' {value.strip()[-2:]!r} is not Spark's syntax: write {value.strip()[:-1].lower()!r})"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            hint = f" (a bare number has no unit: write e.g. '{value}g')"
        raise SparkJobError(name, value, f"is not a Spark memory size; use {MEMORY_RULE}{hint}")
    value = value.strip().lower()
    if memory_mib(value) < MIN_MEMORY_MIB:
        raise SparkJobError(name, value, f"is too small; Spark needs at least '{MIN_MEMORY_MIB}m'")
    return value


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _arguments(_: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SparkJobError("arguments", value, "is not a list; give the arguments as a list of strings, "
                                                "e.g. ['input.txt', '--limit', '10']")
    out = []
    for i, arg in enumerate(value):
        if isinstance(arg, bool) or _scalar(arg) is None:
            raise SparkJobError(f"arguments[{i}]", arg, "is not allowed; each argument is a string (or a number)")
        out.append(_scalar(arg))
    return tuple(out)


def _conf(_: str, value: Any) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise SparkJobError("conf", value, "is not a mapping; give Spark properties as "
                                           "{'spark.sql.shuffle.partitions': '8', ...}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key.startswith("spark.") or key.strip() != key or len(key) <= 6:
            raise SparkJobError("conf", key, "is not a Spark property; keys start with 'spark.', "
                                             "e.g. 'spark.sql.shuffle.partitions'")
        if key in RESERVED_CONF:
            raise SparkJobError("conf", key, f"cannot be set here: it is set by {RESERVED_CONF[key]}")
        if not conf_allowed(key):
            what = ("the platform sets the pods' volumes, images, identity and placement" if
                    key.startswith("spark.kubernetes.") else "it is not among the Spark properties users may set")
            raise SparkJobError("conf", key, f"is not allowed: {what}; {ALLOWED_CONF_RULE}")
        text = _scalar(item)
        if text is None:
            raise SparkJobError(f"conf[{key!r}]", item, "is not allowed; a value is a string, number or boolean")
        out[key] = text
    return MappingProxyType(dict(sorted(out.items())))


def _main_file(_: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SparkJobError("main_file", value, "is not allowed; give the path or URI of the application's "
                                                ".py file")
    value = value.strip()
    if not urlparse(value).path.endswith(".py"):
        raise SparkJobError("main_file", value, "is not a Python file; the platform runs PySpark applications "
                                                "from a .py file")
    return value


def validate_name(value: Any) -> str:
    """`value` if it is a valid application name, else SparkJobError."""
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH or not DNS_LABEL.fullmatch(value):
        raise SparkJobError("name", value, f"is not a valid application name; {NAME_RULE}")
    return value


@dataclass(frozen=True)
class SparkJob:
    """A PySpark application: what to run and with which resources.

    `executors` × `executor_cores` is the parallelism (on the local backend: `local[N]` threads, capped
    at the machine's CPUs). `conf` holds further Spark properties (`spark.*`), on both backends only
    those of the conf policy (`conf_allowed`); the ones a field or the platform sets (RESERVED_CONF)
    are refused with the field to use instead.
    """

    name: str
    main_file: str
    arguments: tuple[str, ...] = ()
    executors: int = 1
    executor_cores: int = 1
    executor_memory: str = "1g"
    driver_cores: int = 1
    driver_memory: str = "1g"
    conf: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        checks = {"name": lambda _, value: validate_name(value), "main_file": _main_file, "arguments": _arguments, "executors": _whole_number,
                  "executor_cores": _whole_number, "executor_memory": _memory, "driver_cores": _whole_number,
                  "driver_memory": _memory, "conf": _conf}
        for name, check in checks.items():  # frozen: normalized values are set the dataclass way
            object.__setattr__(self, name, check(name, getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable; `SparkJob(**job.to_dict())` gives the job back."""
        return {"name": self.name, "main_file": self.main_file, "arguments": list(self.arguments),
                "executors": self.executors, "executor_cores": self.executor_cores,
                "executor_memory": self.executor_memory, "driver_cores": self.driver_cores,
                "driver_memory": self.driver_memory, "conf": dict(self.conf)}


def new_app_id(name: str) -> str:
    """A fresh application id: the name and 8 random hex digits (`wordcount-3f9a1c2e`), a DNS label."""
    return f"{validate_name(name)}-{secrets.token_hex(4)}"


def is_app_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH + 9 and bool(DNS_LABEL.fullmatch(value))


def local_main_file(main_file: str, cwd: str | Path) -> Path:
    """The job's main file on this machine (a path, relative to `cwd`, or a file:// URI), which must exist."""
    parsed = urlparse(main_file)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme and len(parsed.scheme) > 1:  # "C:" is not a scheme
        raise SparkJobError("main_file", main_file, f"is a {parsed.scheme}:// URI; the local backend runs a file "
                                                    "of this machine (a path or file:// URI)")
    else:
        path = Path(main_file)
    try:
        path = (Path(cwd) / path.expanduser()).resolve()
        found = path.is_file()
    except (ValueError, RuntimeError, OSError) as e:  # a NUL byte, ~nosuchuser, a name too long
        raise SparkJobError("main_file", main_file, f"is not a usable path ({e}); give the path of an existing .py "
                                                    "file, relative to the notebook's folder or absolute") from None
    if not found:
        raise SparkJobError("main_file", main_file, f"does not exist (looked for {path}); give the path of an "
                                                    "existing .py file, relative to the notebook's folder or absolute")
    return path
