"""Hub API endpoint that reserves a rollout candidate's GPUs in the local pool (local backend only).

    PUT    /hub/api/mlplatform/rollout-gpus/<team>/<app>            {"user": "alice"}
    POST   /hub/api/mlplatform/rollout-gpus/<team>/<app>/promote    {"user": "alice"}
    DELETE /hub/api/mlplatform/rollout-gpus/<team>/<app>

A rollout runs a candidate beside the champion of a served model, the same size (serving/rollout.py). The
platform service starts and ends rollouts, with the notebook closed too, so it reserves here with its own
token, not a server's: the scope `custom:mlplatform:rollout-gpus` is granted to the service's role only
(`grant_rollout_gpus`). The candidate is sized by the hub, not by the caller: the same GPU type and count as
the champion's reservation (`serving:<team>/<app>`, hub_config/gpu_handler.py), held under
`serving:<team>/<app>/candidate`, budget-checked first and recorded in the usage ledger for `user` (whose
endpoint it is), then taken from the pool against the team's quota, or 409 with the numbers and nothing held.

PUT reserves (again: unchanged); POST promote makes the candidate's devices the champion's and releases the
champion's old ones (its replicas now serve the candidate's version); DELETE releases the candidate's (an
abort). Deleting the endpoint (DELETE of gpu-reservations) releases both. Like every served model's
reservation it is kept in the hub's data directory and survives a hub restart (hub_config/gpu_pool.py).
"""

from __future__ import annotations

from jupyterhub.apihandlers import APIHandler
from tornado import web

from mlplatform_service.budgets import BudgetExceeded

from .gpu_handler import _bad, _checked_app, candidate_key, json_object, reservation_key
from .platform_service import SERVICE
from .profiles import SelectionError

SCOPE = "custom:mlplatform:rollout-gpus"
CUSTOM_SCOPES = {SCOPE: {"description": "Reserve the GPUs of served models' rollout candidates in the local pool "
                                        "(the platform service)."}}
MAX_USER = 255


def grant_rollout_gpus(c, service: str = SERVICE) -> None:
    """Give the platform service's role (hub_config/platform_service.py, configured first) the scope."""
    c.JupyterHub.custom_scopes = {**c.JupyterHub.get("custom_scopes", {}), **CUSTOM_SCOPES}
    c.JupyterHub.load_roles = [{**r, "scopes": [*r["scopes"], SCOPE]} if service in r.get("services", []) else r
                               for r in c.JupyterHub.load_roles]


class RolloutGpusHandler(APIHandler):
    async def put(self, team: str, app: str, action: str | None = None):
        probe, user = self._target(team, app, action, None), self._user()
        champion = probe.pool.holder_of(reservation_key(team, app))
        if champion is None:
            raise web.HTTPError(409, f"served model {app!r} of {team} holds no GPUs of the pool: its candidate "
                                     "takes the champion's size, so there is nothing to reserve")
        key, count = candidate_key(team, app), len(champion.devices)
        what = f"GPUs for the candidate of served model {app!r} of {team}"
        try:  # the budget first (nothing recorded when it refuses), then the quota and the pool
            probe.governance.admit(key, kind="model", team=team, user=user, gpu_type=champion.gpu_type, gpus=count,
                                   model=app)
        except BudgetExceeded as e:
            raise web.HTTPError(e.status, f"{what}: {e.message}") from None
        try:
            alloc = probe.pool.reserve_gpus(key, team, champion.gpu_type, count, durable=True)
        except SelectionError as e:
            probe.governance.release(key)
            raise web.HTTPError(e.status, f"{what}: {e}") from None
        self._record(probe, team, key, user, "reserve", alloc)
        self.finish({"key": key, "team": team, "gpu_type": alloc.gpu_type, "count": len(alloc.devices),
                     "devices": list(alloc.devices)})

    async def post(self, team: str, app: str, action: str | None = None):
        probe, user = self._target(team, app, action, "promote"), self._user()
        key, champion = candidate_key(team, app), reservation_key(team, app)
        held = probe.pool.holder_of(key)
        if held is None:
            raise web.HTTPError(409, f"served model {app!r} of {team} has no candidate GPUs to promote")
        alloc = probe.pool.transfer(key, champion)
        probe.governance.transfer(key, champion, kind="model", team=team, user=user, gpu_type=held.gpu_type,
                                  gpus=len(held.devices), model=app)
        self._record(probe, team, champion, user, "promote", alloc)
        self.finish({"key": champion, "team": team, "gpu_type": alloc.gpu_type, "count": len(alloc.devices),
                     "devices": list(alloc.devices)})

    async def delete(self, team: str, app: str, action: str | None = None):
        probe = self._target(team, app, action, None)
        key = candidate_key(team, app)
        if probe.pool.holder_of(key) is not None:
            probe.pool.release(key)
            probe.governance.release(key)
            self._record(probe, team, key, None, "release", None)
        self.set_status(204)
        self.finish()

    # --- checks, in the order a caller learns of them: who, which team and app, the body -----------
    def _target(self, team: str, app: str, action: str | None, allowed: str | None):
        """A spawner of the hub's config (the pool and the governance the local spawners share), once the
        caller may act, `team` and `app` are names of the catalog's team and of a served model, and the
        path's `action` is the method's (`allowed`)."""
        if self.current_user is None:
            raise web.HTTPError(403, "rollout GPUs need authentication: the platform service's token")
        if not self.has_scope(SCOPE):
            raise web.HTTPError(403, f"only the platform service reserves the GPUs of rollout candidates (scope "
                                     f"{SCOPE}); this token or session lacks it")
        spawner_class = self.settings.get("spawner_class")
        if not hasattr(spawner_class, "pool"):
            raise web.HTTPError(409, "rollout GPUs are for the local GPU pool only: this hub's spawner has none")
        probe = spawner_class(config=self.settings.get("config"))
        if team not in probe.catalog.teams:
            raise _bad("team", team, ", ".join(probe.catalog.teams))
        _checked_app(app)
        if action != allowed:
            raise web.HTTPError(404, f"no action {action!r} of rollout GPUs for {self.request.method}; allowed: "
                                     f"{allowed or 'none (the URL ends with the app)'}")
        return probe

    def _user(self) -> str:
        body = json_object(self.request.body or b"", ("user",), '{"user": "alice"}', "a JSON object with user")
        user = body.get("user")
        if not isinstance(user, str) or not 0 < len(user) <= MAX_USER or self.find_user(user) is None:
            raise _bad("user", user, "the name of a user of this hub (whose endpoint it is)")
        return user

    def _record(self, probe, team: str, key: str, user: str | None, change: str, alloc) -> None:
        details = {"change": change, **({"for": user} if user else {}),
                   **({"gpu_type": alloc.gpu_type, "devices": list(alloc.devices)} if alloc else {})}
        probe.governance.record("rollout", actor=self.current_user.name, team=team, target=key, outcome="succeeded",
                                details=details)
        self.log.info("Rollout GPUs of %s: %s %s (by %s)", key, change, ",".join(alloc.devices) if alloc else "",
                      self.current_user.name)

