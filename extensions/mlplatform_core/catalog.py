"""The platform catalog (`platform.yaml`): load, expand, validate.

The catalog is the single source of truth for teams, GPU types and quotas, profiles, storage, MLflow
and SSO. Everything else (the spawn form, quota checks, the notebook environment, rendered Helm
values) is derived from the validated, immutable `Catalog` returned by `load_catalog`.

Strings may reference the environment as `${NAME}` or `${NAME:-default}`, so one catalog serves
several ports or clusters; an undefined variable without a default is a validation error.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from . import images
from .catalog_gitops import Gitops
from .names import CLUSTER_DOMAIN, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN
from .quantities import parse_cpu, parse_memory

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
Slug = Annotated[str, Field(pattern=DNS_LABEL_PATTERN)]


class CatalogError(ValueError):
    """A catalog that cannot be used; `problems` lists every problem found, one line each."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"invalid catalog {path}:\n" + "\n".join(f"  - {p}" for p in problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked_by(parse) -> AfterValidator:
    """A quantity `parse` accepts (unset allowed), kept as written."""
    def check(value):
        if value is not None:
            parse(value)
        return value
    return AfterValidator(check)


CpuQuantity = Annotated[str | float | None, _checked_by(parse_cpu)]
MemoryQuantity = Annotated[str | float | None, _checked_by(parse_memory)]


class CpuResource(_Model):
    """Requests (`guarantee`) and limits (`limit`) in Kubernetes quantities."""

    guarantee: CpuQuantity = None
    limit: CpuQuantity = None


class MemoryResource(_Model):
    guarantee: MemoryQuantity = None
    limit: MemoryQuantity = None


class Toleration(_Model):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class GpuType(_Model):
    display_name: str
    resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    # Device ids handed out through CUDA_VISIBLE_DEVICES by the local spawner. They may be declared on
    # a machine without GPUs (trying and testing); on Kubernetes the device plugin assigns devices.
    local_devices: list[str] = []
    # What one GPU of this type costs an hour (in `platform_service.currency`): turns GPU-hours into cost.
    price_per_hour: float = Field(0, ge=0)


class GpuQuota(_Model):
    total: int = Field(0, ge=0)
    per_type: dict[str, Annotated[int, Field(ge=0)]] = {}


class TeamQuota(_Model):
    """CPU and memory all pods of a team may request together (ResourceQuota requests.cpu/memory)."""

    cpu: CpuQuantity = None
    memory: Annotated[str | int | None, _checked_by(parse_memory)] = None


class Budget(_Model):
    """What a team may use per period: GPU-hours, or cost (GPU-hours × the GPU types' prices), or both."""

    period: Literal["month", "week"] = "month"
    gpu_hours: float | None = Field(None, gt=0)
    cost: float | None = Field(None, gt=0)


class LiveGates(_Model):
    """The live gates of safe rollout (shadow → canary → champion): the platform service's rollout controller
    reads the last `window_seconds` of an endpoint's inference log every `check_every_seconds`, rolls the
    traffic back to the champion when the candidate breaches the SLO, and lets a promotion through only when
    every gate passes (mlplatform_service.live_gates). Counts are of logged answers (after
    `serving.inference_log.sample_rate`)."""

    # The largest per-feature PSI of the live inputs against the candidate's reference data; 0.2 is the
    # classic "significant shift" level and the founding documents' threshold.
    max_drift: float = Field(0.2, gt=0)
    # The candidate's p99 latency may be at most this many times the champion's (below 1 would demand a
    # faster candidate and roll back an equal one on noise).
    max_p99_ratio: float = Field(1.5, ge=1)
    # The SLO: the share of the candidate's answers with HTTP status ≥ 500 (a 4xx is the caller's error).
    max_error_rate: float = Field(0.01, ge=0, le=1)
    # An absolute bound on the candidate's p99 latency; unset: only the ratio to the champion's.
    latency_slo_ms: float | None = Field(None, gt=0)
    # Candidate answers needed before a promotion, and the drift gate's minimum of live rows. Below about
    # 200 a p99 is the slowest answer or two, and PSI of an unshifted sample comes near 0.2 (about 9/n).
    min_requests: int = Field(200, ge=20)
    # How far back the controller looks (a day at most: each check reads the whole window).
    window_seconds: int = Field(600, ge=60, le=86400)
    # The controller's period. A rollback must happen within two minutes of a breach: at most 60 s here plus
    # at most 60 s of `serving.inference_log.flush_seconds` before the breach is in S3.
    check_every_seconds: int = Field(15, ge=1, le=60)
    # Candidate answers needed before a rollback (not on 2 slow requests); at most `min_requests`.
    min_requests_for_rollback: int = Field(20, ge=5)
    # Each side's first answers of its model version in the window are its warm-up, left out of its latencies
    # (p50, p99): a replica that has just started answers its first requests slowly (README: a healthy
    # candidate's p99 over 260 answers was 4.4x its champion's with its first 8, 0.98x without). Errors count.
    warmup_requests: int = Field(20, ge=0)


class TeamLiveGates(_Model):
    """A team's override of `promotion.live_gates`: the keys it sets (the same keys and bounds); each key
    left unset keeps the platform's value. `latency_slo_ms` cannot be unset for one team once the platform
    sets it (a team may raise it)."""

    max_drift: float | None = Field(None, gt=0)
    max_p99_ratio: float | None = Field(None, ge=1)
    max_error_rate: float | None = Field(None, ge=0, le=1)
    latency_slo_ms: float | None = Field(None, gt=0)
    min_requests: int | None = Field(None, ge=20)
    window_seconds: int | None = Field(None, ge=60, le=86400)
    check_every_seconds: int | None = Field(None, ge=1, le=60)
    min_requests_for_rollback: int | None = Field(None, ge=5)
    warmup_requests: int | None = Field(None, ge=0)


class Team(_Model):
    display_name: str | None = None
    group: str  # the Keycloak group, without the leading "/"
    namespace: Slug
    gpu_quota: GpuQuota = GpuQuota()
    quota: TeamQuota = TeamQuota()
    # What members of other teams may do with this team's MLflow experiments and models; unset:
    # `mlflow.access.other_teams`.
    mlflow_other_teams: Literal["read", "none"] | None = None
    # Unset: no budget (quota alone limits the team).
    budget: Budget | None = None
    # The team's own live gates of safe rollout: only the keys it sets; the rest are `promotion.live_gates`'s
    # (a merge, not a replacement: Catalog.live_gates_for).
    live_gates: TeamLiveGates | None = None


class ProfileGpu(_Model):
    types: list[str] = Field(min_length=1)
    counts: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)


class Profile(_Model):
    display_name: str
    description: str = ""
    image: str
    cpu: CpuResource = CpuResource()
    memory: MemoryResource = MemoryResource()
    teams: list[str] = Field(min_length=1)
    gpu: ProfileGpu | None = None
    default: bool = False
    # Seconds without activity before the server is stopped; unset: `culling.timeout_seconds`, or
    # `culling.gpu_timeout_seconds` for a profile with GPUs.
    idle_timeout_seconds: int | None = Field(None, ge=60)


class S3Storage(_Model):
    endpoint_url: str
    region: str = "us-east-1"
    bucket: str
    user_prefix: str = "users/{username}/"
    team_prefix: str = "teams/{team}/"
    role_arn: str
    # STS endpoint for AssumeRoleWithWebIdentity; unset: AWS STS of the region. MinIO and SeaweedFS
    # serve STS on the S3 endpoint itself.
    sts_endpoint_url: str | None = None
    credentials_duration_seconds: int = Field(3600, ge=900, le=43200)

    @field_validator("user_prefix", "team_prefix")
    @classmethod
    def _prefix(cls, v):
        if not v.endswith("/") or v.startswith("/"):
            raise ValueError(f"{v!r} must end with '/' and must not start with '/'")
        return v

    def prefixes(self, username: str, team: str) -> tuple[str, str]:
        """The user's own prefix and the team's shared prefix in the bucket."""
        return (self.user_prefix.format(username=username, team=team),
                self.team_prefix.format(username=username, team=team))


class Storage(_Model):
    s3: S3Storage


class MlflowAccess(_Model):
    """MLflow's own access control (its auth app with one workspace per team), fed by tokens the hub signs.

    `hub-tokens`: the tracking server runs `--app-name basic-auth --enable-workspaces` with the
    platform's authorization function; a notebook gets short-lived tokens from the hub (its team's
    members' rights, read on other teams per `other_teams`). `none`: an MLflow without authentication
    (anyone who reaches it may change anything): for a server the platform does not run."""

    mode: Literal["hub-tokens", "none"] = "hub-tokens"
    other_teams: Literal["read", "none"] = "read"
    token_lifetime_seconds: int = Field(900, ge=60, le=3600)
    # The auth app's own store (users, roles, permissions) in a cluster (`mlplatform render`'s auth.ini).
    auth_database_uri: str = "sqlite:////var/lib/mlflow/auth.db"


class Mlflow(_Model):
    tracking_uri: str
    # Artifact root of each team's default experiment (MLFLOW_EXPERIMENT_NAME = the team), for example
    # "s3://platform/teams/{team}/mlflow": notebooks then write artifacts straight to the team's prefix
    # with their own short-lived credentials. Unset: the tracking server's default artifact root.
    team_artifact_root: str | None = None
    access: MlflowAccess = MlflowAccess()

    def other_teams(self, team: Team) -> str:
        """`read` or `none`: what other teams may do with `team`'s experiments and models."""
        return team.mlflow_other_teams or self.access.other_teams


class MetricGate(_Model):
    metric: str
    op: Literal[">=", ">", "<=", "<"]
    threshold: float


class Promotion(_Model):
    """Quality gates a model version must pass before the alias (for example @champion) moves to it."""

    alias: str = "champion"
    metric_gates: list[MetricGate] = []
    # The candidate must be no worse than the current champion on every gated metric (direction from op).
    compare_with_champion: bool = True
    require_signature: bool = True
    # Tags the model version (or, failing that, its registered model) must carry for its model card.
    model_card_fields: list[str] = ["intended_use", "owner"]
    # Aliases besides `alias` that only the platform service may move (MLflow refuses anyone else).
    protected_aliases: list[str] = []
    # Shadow → canary → champion: the live gates and the automatic rollback (teams may override keys).
    live_gates: LiveGates = LiveGates()

    @property
    def protected(self) -> list[str]:
        """Every alias only the platform moves: `alias` first."""
        return [self.alias, *(a for a in self.protected_aliases if a != self.alias)]


class InferenceLogSettings(_Model):
    """`serving.inference_log`: how serving replicas in a rollout log sampled requests and answers to the team's
    S3 prefix (mlplatform.serving.inference_log; the defaults are its DEFAULTS)."""

    # Share of requests logged, chosen by request id (both sides of a mirrored request together).
    sample_rate: float = Field(1.0, ge=0, le=1)
    batch_rows: int = Field(1000, ge=1)  # records per Parquet file, at most
    # A batch is written at least this often; at most 60 s, so a breach reaches the controller in time
    # (see promotion.live_gates.check_every_seconds).
    flush_seconds: float = Field(10.0, gt=0, le=60)
    # What a replica holds while S3 is slow or down (the batch being written included); beyond it records
    # are dropped and counted.
    max_buffered_rows: int = Field(20000, ge=1)
    max_buffered_mb: float = Field(64, gt=0)
    retention_days: int = Field(30, ge=1)  # hours older than this are deleted


class ServingLimits(_Model):
    """The `serving` section: upper bounds of one served model, and its inference log. The serving API
    refuses more before anything is deployed; on Kubernetes the team namespace's ResourceQuota is the wall."""

    max_replicas: int = Field(16, ge=1)  # fixed replicas, or the autoscaling maximum
    max_cpus_per_replica: float = Field(16, gt=0)
    max_gpus_per_replica: int = Field(8, ge=1)
    # An autoscaled model with no traffic for this long scales down to its minimum replicas.
    idle_downscale_seconds: int = Field(600, ge=10)
    inference_log: InferenceLogSettings = InferenceLogSettings()


class Culling(_Model):
    """Idle servers stopped by the hub's idle culler (jupyterhub-idle-culler): an idle GPU burns the budget."""

    enabled: bool = True
    timeout_seconds: int = Field(3600, ge=60)
    gpu_timeout_seconds: int = Field(1800, ge=60)
    every_seconds: int = Field(300, ge=10)


class PlatformService(_Model):
    """The platform service (governance): promotion, the audit log, the usage ledger and budgets."""

    # SQLAlchemy URL of its database (audit log, usage ledger, budget reservations), shared by the hub
    # and the service: PostgreSQL in production, its password by reference to a variable of the hub pod
    # set from a Secret, e.g. "postgresql+psycopg://mlplatform:${MLPLATFORM_DB_PASSWORD}@postgres/mlplatform"
    # (`mlplatform render` keeps that reference; the hub expands it: hub_config/render/jupyterhub.py).
    # The default: SQLite on the volume of z2jh's hub database (its hub pod writes nowhere else); the
    # local platform uses SQLite in its data directory.
    database_url: str = "sqlite:////srv/jupyterhub/mlplatform.sqlite"
    audit_retention_days: int = Field(2557, ge=1)  # seven years
    budget_warning_at: float = Field(0.8, gt=0, le=1)
    # An allocation's duration is unknown when it is admitted: it holds this many hours of its GPUs
    # against the budget while it runs, so concurrent allocations cannot together overrun it.
    budget_hold_hours: float = Field(1, gt=0)
    currency: str = "USD"


class Sso(_Model):
    realm_url: str
    client_id: str = "jupyterhub"
    admin_role: str = "platform-admin"
    scopes: list[str] = ["openid", "profile", "email", "groups", "roles"]


class PlatformSettings(_Model):
    name: str = "mlplatform"
    backend: Literal["local", "kubernetes"] = "local"


class Images(_Model):
    """Images of the Kubernetes deployment besides the profiles' notebook images (built under images/)."""

    hub: str = images.HUB
    serving: str = images.SERVING
    serving_gpu: str = images.SERVING_GPU
    spark: str = images.SPARK
    # Images the catalog names that are built outside this repository (checked by tests/unit/test_images.py).
    external: list[str] = []


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as e:
        raise ValueError(f"{value!r} is not a network in CIDR notation such as 10.244.0.0/16 ({e})") from None


def _dns_subdomain(value: str) -> str:
    if not re.match(DNS_SUBDOMAIN_PATTERN, value):
        raise ValueError("must be a DNS domain such as cluster.local: dot-separated DNS labels (lowercase letters, "
                         "digits and '-'), no trailing dot, at most 253 characters")
    return value


class GatewaySettings(_Model):
    """`kubernetes.gateway`: each team's rollout gateway (hub_config/render/gateway.py), where callers reach the
    team's endpoints and the platform records the evidence of its rollouts."""

    replicas: int = Field(2, ge=1)
    # Of its service account (`mlplatform-gateway`, in the hub's namespace), which writes the evidence: the cloud
    # identity that may write <bucket>/platform/evidence/*, e.g. {"eks.amazonaws.com/role-arn": "arn:aws:iam::..."}.
    service_account_annotations: dict[str, str] = {}


class KubernetesSettings(_Model):
    """How the platform runs on a cluster (platform.backend: kubernetes); `mlplatform render` reads it."""

    hub_namespace: Slug = "jupyterhub"
    # The cluster's DNS domain (the kubelet's --cluster-domain): Services are <name>.<namespace>.svc.<domain>.
    cluster_domain: Annotated[str, AfterValidator(_dns_subdomain)] = CLUSTER_DOMAIN
    # Public URL of the hub (OAuth callback: <public_url>/hub/oauth_callback).
    public_url: str = "https://jupyter.example.org"
    # Service account of single-user pods in every team namespace; RBAC lets it manage RayService and
    # SparkApplication there and read pod logs and events, but not pods themselves (render/teams.py).
    service_account: Slug = "mlplatform-notebook"
    # Service account of Spark drivers in every team namespace; the Spark operator's chart creates it
    # with the Role a driver needs to run its executors (helm-values/spark-operator.yaml).
    spark_service_account: Slug = "mlplatform-spark"
    # Service account of RayService pods (model serving) in every team namespace: no Kubernetes API
    # access; give it the cloud identity that may read the team's MLflow artifacts (e.g. an IRSA role).
    serving_service_account: Slug = "mlplatform-serving"
    # The cluster's service-account token issuer and its public keys (EKS: the cluster's OIDC issuer URL
    # and <issuer>/keys): MLflow accepts tokens of RayService pods projected for it (mlflow.access).
    service_account_issuer: str | None = None
    service_account_jwks_url: str | None = None
    # The cluster's pod address ranges (e.g. ["10.244.0.0/16"]): the platform service's admission webhook
    # port is then closed to pods, open to the API server (a NetworkPolicy cannot name the API server).
    pod_cidrs: list[Annotated[str, AfterValidator(_cidr)]] = []
    images: Images = Images()
    gateway: GatewaySettings = GatewaySettings()


class Catalog(_Model):
    """A validated catalog. Immutable: spawners and renderers derive from it, never change it."""

    platform: PlatformSettings = PlatformSettings()
    sso: Sso
    mlflow: Mlflow
    storage: Storage
    promotion: Promotion = Promotion()
    serving: ServingLimits = ServingLimits()
    culling: Culling = Culling()
    platform_service: PlatformService = PlatformService()
    kubernetes: KubernetesSettings = KubernetesSettings()
    # Unset: the notebook applies objects to the Kubernetes API; set: each change is a commit (catalog_gitops.py).
    gitops: Gitops | None = None
    gpu_types: dict[Slug, GpuType] = {}
    teams: dict[Slug, Team] = Field(min_length=1)
    profiles: dict[Slug, Profile] = Field(min_length=1)
    _path: str = PrivateAttr("<catalog>")

    @property
    def path(self) -> str:
        """The file the catalog was read from (for error messages)."""
        return self._path

    def teams_of(self, groups) -> list[str]:
        """The teams whose Keycloak group is among `groups` (leading "/" ignored), in catalog order."""
        wanted = {g.lstrip("/") for g in groups}
        return [name for name, team in self.teams.items() if team.group in wanted]

    def idle_timeout(self, profile: str) -> int:
        """Seconds of inactivity after which a server of `profile` is culled."""
        p = self.profiles[profile]
        if p.idle_timeout_seconds is not None:
            return p.idle_timeout_seconds
        return self.culling.gpu_timeout_seconds if p.gpu else self.culling.timeout_seconds

    @property
    def team_groups(self) -> list[str]:
        return [team.group for team in self.teams.values()]

    def live_gates_for(self, team: str) -> LiveGates:
        """`promotion.live_gates` with the keys `teams.<team>.live_gates` sets put over it (a merge: a key the
        team leaves unset keeps the platform's value). KeyError for a team the catalog does not have."""
        if team not in self.teams:
            raise KeyError(f"no team {team!r} in the catalog; teams: {', '.join(self.teams)}")
        override = self.teams[team].live_gates
        if override is None:
            return self.promotion.live_gates
        return LiveGates.model_validate({**self.promotion.live_gates.model_dump(),
                                         **override.model_dump(exclude_none=True)})


def _expand(value: Any, key_path: str, problems: list[str], environ) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, f"{key_path}.{k}" if key_path else str(k), problems, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{key_path}[{i}]", problems, environ) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(f"{key_path}: {match.group(0)} refers to ${name}, which is not set; "
                        f"set it or give a default as ${{{name}:-value}}")
        return match.group(0)

    return _ENV_REF.sub(substitute, value)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: dict) -> str:
    where = _loc(error["loc"])
    value = error.get("input")
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(error["loc"][:-1]))
        return f"{where}: unknown key {error['loc'][-1]!r}; allowed keys: {allowed}"
    if kind == "missing":
        return f"{where}: required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        msg = "must be a DNS label: lowercase letters, digits and '-', at most 63 characters"
    return f"{where}: {value!r} is not allowed: {msg}"


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed at a location of the catalog (for 'unknown key' messages)."""
    node: Any = Catalog
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            node = node.model_fields[part].annotation
        else:  # a dict value or a list item
            node = get_args(node)[-1]
    node = _unwrap(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _unwrap(annotation):
    """`Profile | None` → Profile; `Annotated[X, ...]` → X."""
    while get_origin(annotation) in (Union, UnionType, Annotated):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _cross_check(m: Catalog) -> list[str]:
    """References between sections: teams, GPU types and quotas must line up."""
    problems = []
    gpu_names = ", ".join(m.gpu_types) or "(none declared)"
    team_names = ", ".join(m.teams)
    for name, team in m.teams.items():
        for gpu, count in team.gpu_quota.per_type.items():
            if gpu not in m.gpu_types:
                problems.append(f"teams.{name}.gpu_quota.per_type: {gpu!r} is not a GPU type; allowed: {gpu_names}")
            elif count > team.gpu_quota.total:
                problems.append(f"teams.{name}.gpu_quota.per_type.{gpu}: {count} is more than the team's "
                                f"total GPU quota {team.gpu_quota.total}; allowed: 0 to {team.gpu_quota.total}")
    groups = [t.group for t in m.teams.values()]
    for group in sorted({g for g in groups if groups.count(g) > 1}):
        problems.append(f"teams: group {group!r} is used by more than one team; each Keycloak group maps to one team")
    for name, profile in m.profiles.items():
        for i, team in enumerate(profile.teams):
            if team not in m.teams:
                problems.append(f"profiles.{name}.teams[{i}]: {team!r} is not a team; allowed: {team_names}")
        if profile.gpu:
            for i, gpu in enumerate(profile.gpu.types):
                if gpu not in m.gpu_types:
                    problems.append(f"profiles.{name}.gpu.types[{i}]: {gpu!r} is not a GPU type; allowed: {gpu_names}")
            if len(set(profile.gpu.counts)) != len(profile.gpu.counts):
                problems.append(f"profiles.{name}.gpu.counts: {profile.gpu.counts} repeats a count; list each once")
    for name, team in m.teams.items():
        if team.budget and team.budget.gpu_hours is None and team.budget.cost is None:
            problems.append(f"teams.{name}.budget: names neither gpu_hours nor cost; set one or both")
    defaults = [name for name, p in m.profiles.items() if p.default]
    if len(defaults) > 1:
        problems.append(f"profiles: {', '.join(defaults)} are all marked default: true; mark at most one")
    gates = m.promotion.live_gates
    if gates.min_requests_for_rollback > gates.min_requests:
        problems.append(_rollback_count_problem("promotion.live_gates", gates, ""))
    else:  # a team's merged gates (the platform's being right)
        for name, team in m.teams.items():
            gates = m.live_gates_for(name)
            if team.live_gates is not None and gates.min_requests_for_rollback > gates.min_requests:
                problems.append(_rollback_count_problem(
                    f"teams.{name}.live_gates", gates,
                    " (with promotion.live_gates' values for the keys the team does not set)"))
    log = m.serving.inference_log
    if log.max_buffered_rows < log.batch_rows:
        problems.append(f"serving.inference_log.max_buffered_rows: {log.max_buffered_rows} is less than batch_rows "
                        f"{log.batch_rows}; allowed: at least batch_rows")
    k8s = m.kubernetes
    if bool(k8s.service_account_issuer) != bool(k8s.service_account_jwks_url):
        problems.append("kubernetes.service_account_issuer and kubernetes.service_account_jwks_url: set both "
                        "(the issuer MLflow trusts and where its keys are) or neither")
    return problems


def _rollback_count_problem(where: str, gates: LiveGates, merged: str) -> str:
    return (f"{where}: min_requests_for_rollback {gates.min_requests_for_rollback} is more than min_requests "
            f"{gates.min_requests}{merged}; allowed: at most min_requests (a rollback must not need more answers "
            "than a promotion)")


def parse_catalog(data: Any, path: str = "<catalog>", environ=None) -> Catalog:
    """Validate catalog data (already parsed from YAML); raise CatalogError listing every problem."""
    environ = os.environ if environ is None else environ
    if not isinstance(data, dict):
        raise CatalogError(path, [f"the catalog must be a mapping of sections, not {type(data).__name__}"])
    problems: list[str] = []
    data = _expand(data, "", problems, environ)
    if problems:
        raise CatalogError(path, problems)
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as e:
        raise CatalogError(path, [_describe(err) for err in e.errors()]) from None
    problems = _cross_check(catalog)
    if problems:
        raise CatalogError(path, problems)
    catalog._path = path
    return catalog


def load_catalog(path: str | os.PathLike, environ=None) -> Catalog:
    """Read and validate a catalog file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CatalogError(str(path), [f"cannot read the file: {e.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CatalogError(str(path), [f"not valid YAML: {e}"]) from None
    return parse_catalog(data, str(path), environ)


def cached_catalog(path: str | os.PathLike) -> Catalog:
    """`load_catalog(path)`, read again only when the file changes (its mtime or size).

    For the paths that consult the catalog on every call: the spawn page, the credential broker, the
    notebook's serving and Spark APIs (every status poll). Environment references are expanded on the
    first read of each version of the file."""
    try:
        stat = os.stat(path)
    except OSError:
        return load_catalog(path)  # raises CatalogError naming the file
    return _load_version(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _load_version(path: str, mtime_ns: int, size: int) -> Catalog:
    return load_catalog(path)
