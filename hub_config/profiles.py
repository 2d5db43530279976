"""The profile pipeline: catalog + the user's groups + a quota snapshot → choices, and back.

Pure functions shared by every spawner (local and Kubernetes). Nothing here reads the environment,
talks to a cluster or mutates the catalog: the spawner builds a `QuotaSnapshot` from what it knows
(running servers locally, ResourceQuota objects on Kubernetes) and passes it in.

- `spawn_choices` lists, per team of the user, the profiles that team may use and every GPU type ×
  count choice with its availability ("A100 ×2 — 3 of 4 team-vision A100 free") or the reason it is
  disabled.
- `select` re-validates what a user submitted (form or REST API) against the same rules and returns
  a `Selection`, or raises `SelectionError` whose message lists what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlplatform_core.catalog import Catalog, Profile

USER_OPTION_KEYS = ("team", "profile", "gpu_type", "gpu_count")


class SelectionError(ValueError):
    """A submitted choice that cannot be granted. `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class QuotaSnapshot:
    """GPUs in use, as the spawner sees them at one moment.

    used: team → GPU type → GPUs held by the team's running (or starting) servers.
    pool_free: GPU type → devices still free on this machine (local backend only; None elsewhere).
    """

    used: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    pool_free: Mapping[str, int] | None = None
    # team → (hard, used) GPUs of the team namespace's ResourceQuota (Kubernetes only). It replaces the
    # catalog's total quota: the cluster enforces it, and it also counts GPUs of Ray and Spark pods.
    cluster_totals: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def used_by(self, team: str, gpu_type: str | None = None) -> int:
        per_type = self.used.get(team, {})
        return per_type.get(gpu_type, 0) if gpu_type else sum(per_type.values())

    def total(self, catalog: Catalog, team: str) -> tuple[int, int]:
        """The team's total GPU quota and how much of it is free now."""
        if team in self.cluster_totals:
            hard, used = self.cluster_totals[team]
            return hard, max(0, hard - max(used, self.used_by(team)))
        quota = catalog.teams[team].gpu_quota.total
        return quota, max(0, quota - self.used_by(team))


@dataclass(frozen=True)
class Availability:
    """How many GPUs of one type a team may still take, and why not more."""

    team: str
    gpu_type: str
    type_quota: int
    type_free: int
    total_quota: int
    total_free: int
    pool_free: int | None

    @property
    def free(self) -> int:
        limits = [self.type_free, self.total_free] + ([self.pool_free] if self.pool_free is not None else [])
        return max(0, min(limits))

    def refusal(self, count: int, display: str) -> str | None:
        """Why `count` GPUs cannot be granted now, or None when they can."""
        if self.type_quota == 0:
            return f"{self.team} has no {display} quota"
        if count > self.type_free:
            return f"only {self.type_free} of {self.type_quota} {self.team} {display} free"
        if count > self.total_free:
            return f"only {self.total_free} of {self.total_quota} {self.team} GPUs free in total"
        if self.pool_free is not None and count > self.pool_free:
            return f"only {self.pool_free} {display} left on this machine"
        return None


@dataclass(frozen=True)
class GpuChoice:
    gpu_type: str
    count: int
    label: str
    reason: str | None  # why the choice is disabled; None when it can be taken

    @property
    def value(self) -> str:
        return f"{self.gpu_type}:{self.count}"

    @property
    def available(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class ProfileChoice:
    slug: str
    profile: Profile
    gpu_choices: tuple[GpuChoice, ...] = ()

    @property
    def available(self) -> bool:
        return self.profile.gpu is None or any(c.available for c in self.gpu_choices)


@dataclass(frozen=True)
class TeamChoices:
    team: str
    display_name: str
    profiles: tuple[ProfileChoice, ...]
    gpu_total: int  # the team's total GPU quota
    gpu_free: int  # of which free now


@dataclass(frozen=True)
class Selection:
    """A validated choice: what the spawner applies."""

    team: str
    profile: str
    gpu_type: str | None = None
    gpu_count: int = 0

    def as_user_options(self) -> dict:
        return {"team": self.team, "profile": self.profile, "gpu_type": self.gpu_type, "gpu_count": self.gpu_count}


def availability(catalog: Catalog, snapshot: QuotaSnapshot, team: str, gpu_type: str) -> Availability:
    quota = catalog.teams[team].gpu_quota
    type_quota = quota.per_type.get(gpu_type, 0)
    pool = snapshot.pool_free.get(gpu_type, 0) if snapshot.pool_free is not None else None
    total_quota, total_free = snapshot.total(catalog, team)
    return Availability(
        team=team,
        gpu_type=gpu_type,
        type_quota=type_quota,
        type_free=max(0, type_quota - snapshot.used_by(team, gpu_type)),
        total_quota=total_quota,
        total_free=total_free,
        pool_free=pool,
    )


def gpu_choices(catalog: Catalog, snapshot: QuotaSnapshot, team: str, profile: Profile) -> tuple[GpuChoice, ...]:
    if profile.gpu is None:
        return ()
    choices = []
    for gpu_type in profile.gpu.types:
        display = catalog.gpu_types[gpu_type].display_name
        avail = availability(catalog, snapshot, team, gpu_type)
        for count in profile.gpu.counts:
            reason = avail.refusal(count, display)
            status = reason or f"{avail.free} of {avail.type_quota} {team} {display} free"
            choices.append(GpuChoice(gpu_type, count, f"{display} ×{count} — {status}", reason))
    return tuple(choices)


def profiles_for_team(catalog: Catalog, team: str) -> list[str]:
    return [slug for slug, profile in catalog.profiles.items() if team in profile.teams]


def spawn_choices(catalog: Catalog, groups, snapshot: QuotaSnapshot) -> list[TeamChoices]:
    """Everything the spawn form offers this user, per team, with availability."""
    result = []
    for team in catalog.teams_of(groups):
        profiles = tuple(
            ProfileChoice(slug, catalog.profiles[slug], gpu_choices(catalog, snapshot, team, catalog.profiles[slug]))
            for slug in profiles_for_team(catalog, team)
        )
        total, free = snapshot.total(catalog, team)
        result.append(TeamChoices(team, catalog.teams[team].display_name or team, profiles,
                                  gpu_total=total, gpu_free=free))
    return result


def _allowed(values) -> str:
    return ", ".join(str(v) for v in values) or "(none)"


def select(catalog: Catalog, groups, snapshot: QuotaSnapshot, user_options: Mapping | None) -> Selection:
    """Validate submitted user options against the user's teams, the profiles and the free quota.

    Missing keys take defaults: the user's only team, the team's default profile, the profile's first
    GPU type and smallest count.
    """
    options = dict(user_options or {})
    unknown = sorted(set(options) - set(USER_OPTION_KEYS))
    if unknown:
        raise SelectionError(400, f"unknown option {unknown[0]!r}; allowed options: {_allowed(USER_OPTION_KEYS)}")

    teams = catalog.teams_of(groups)
    if not teams:
        raise SelectionError(403, "you are not a member of any team of this platform; allowed groups: "
                                  f"{_allowed(catalog.team_groups)}. Ask a platform administrator to add you to one.")
    team = options.get("team")
    if team is None:
        if len(teams) > 1:
            raise SelectionError(400, f"you are in several teams: choose one with 'team'; allowed: {_allowed(teams)}")
        team = teams[0]
    if team not in teams:
        raise SelectionError(403, f"team {team!r} is not one of your teams; allowed: {_allowed(teams)}")

    allowed_profiles = profiles_for_team(catalog, team)
    slug = options.get("profile")
    if slug is None:
        defaults = [s for s in allowed_profiles if catalog.profiles[s].default]
        slug = (defaults or allowed_profiles or [None])[0]
    if slug not in allowed_profiles:
        raise SelectionError(403, f"profile {slug!r} is not available to {team}; allowed: {_allowed(allowed_profiles)}")
    profile = catalog.profiles[slug]

    if profile.gpu is None:
        if options.get("gpu_count") not in (None, 0) or options.get("gpu_type") is not None:
            raise SelectionError(400, f"profile {slug!r} has no GPUs; leave gpu_type and gpu_count out")
        return Selection(team, slug)

    gpu_type = options.get("gpu_type") or profile.gpu.types[0]
    if gpu_type not in profile.gpu.types:
        raise SelectionError(400, f"gpu_type {gpu_type!r} is not offered by profile {slug!r}; "
                                  f"allowed: {_allowed(profile.gpu.types)}")
    count = options.get("gpu_count") or profile.gpu.counts[0]
    if isinstance(count, str) and count.isascii() and count.isdecimal():  # "²".isdigit() is true, int("²") fails
        count = int(count)
    if not isinstance(count, int) or isinstance(count, bool) or count not in profile.gpu.counts:
        raise SelectionError(400, f"gpu_count {count!r} is not offered by profile {slug!r}; "
                                  f"allowed: {_allowed(profile.gpu.counts)}")
    check_quota(catalog, snapshot, team, gpu_type, count, profile)
    return Selection(team, slug, gpu_type, count)


def check_quota(catalog: Catalog, snapshot: QuotaSnapshot, team: str, gpu_type: str, count: int,
                profile: Profile | None = None) -> None:
    """Raise SelectionError (409) when `count` GPUs of `gpu_type` are beyond the team's free quota."""
    display = catalog.gpu_types[gpu_type].display_name
    avail = availability(catalog, snapshot, team, gpu_type)
    reason = avail.refusal(count, display)
    if reason:
        counts = profile.gpu.counts if profile and profile.gpu else range(1, count)
        fitting = [c for c in counts if avail.refusal(c, display) is None]
        raise SelectionError(409, f"cannot start with {count} {display} GPU{'s' if count > 1 else ''}: {reason}; "
                                  f"counts you can take now: {_allowed(fitting)}")
