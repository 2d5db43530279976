"""Hub API endpoint that reserves GPUs of the local pool for a served model (local backend only).

    PUT    /hub/api/mlplatform/gpu-reservations/<user>/<app>?server=<name>   {"count": n, "gpu_type": "t4"}
    DELETE /hub/api/mlplatform/gpu-reservations/<user>/<app>?server=<name>

A Ray Serve application with GPU replicas runs on the local Ray head, outside every notebook server,
so the spawner never sees it. Before the local serving backend hands such an application to Serve it
asks here: the hub's GPU pool (hub_config/gpu_pool.py) takes `count` devices of the type for
`serving:<team>/<app>` against the team's quota and the machine's pool, in the same step as spawns
(no await between the check and the reservation), and answers the devices, or 409 with the numbers.
A PUT for an application that holds a reservation adjusts it (a refused change keeps the old one);
DELETE gives it back, and its rollout candidate's (hub_config/rollout_gpu_handler.py). The team's budget
is checked first (hub_config/governance.py: 409 with the numbers), and the reservation is the model's allocation in the usage ledger until DELETE. The team is that of the user's running server `server` ("" the default), and
the user must still be in it (groups re-read from the realm as for S3 credentials, at most
`c.S3CredentialBroker.membership_max_age` old). Served models' reservations outlive servers and hub
restarts (the pool keeps them in the hub's data directory): they end with their application.

It needs the scope `custom:mlplatform:gpu-reservations` for that user: a server's token carries it
for its own user (as the S3 credential scope), JupyterHub's admin role does not include it. On
Kubernetes there is nothing to reserve here: RayService pods carry the GPU-type label and the team
namespace's ResourceQuota counts them. Registered by KeycloakOAuthenticator.get_handlers.
"""

from __future__ import annotations

import json

from mlplatform_core.names import DNS_LABEL, MAX_DNS_LABEL
from tornado import web

from mlplatform_service.budgets import BudgetExceeded

from .profiles import SelectionError
from .s3_broker import CredentialsUnavailable
from .server_handler import RunningServerHandler, broker

SCOPE = "custom:mlplatform:gpu-reservations"
CUSTOM_SCOPES = {SCOPE: {"description": "Reserve GPUs of the local pool for a user's served models, "
                                        "counted against their running server's team quota."}}
FIELDS = ("count", "gpu_type")
MAX_BODY = 4096


def reservation_key(team: str, app: str) -> str:
    return f"serving:{team}/{app}"


def candidate_key(team: str, app: str) -> str:
    """The key of a rollout candidate's GPUs (rollout_gpu_handler.py)."""
    return f"{reservation_key(team, app)}/candidate"


def json_object(raw: bytes, fields, example: str, described: str) -> dict:
    """A request's body: a JSON object of at most MAX_BODY bytes with none but `fields` (413 or 400 saying
    what is wrong, `example` showing one that is right)."""
    if len(raw) > MAX_BODY:
        raise web.HTTPError(413, f"the body has {len(raw)} bytes; allowed: at most {MAX_BODY}")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise web.HTTPError(400, f"the body is not JSON; send an object like {example}") from None
    if not isinstance(body, dict):
        raise _bad("body", body, described)
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise _bad("body", unknown[0], f"the field{'s' if len(fields) > 1 else ''} {', '.join(fields)}")
    return body


def _bad(field: str, value, allowed: str) -> web.HTTPError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return web.HTTPError(400, f"{field}: {shown} is not allowed; allowed: {allowed}")


class GpuReservationsHandler(RunningServerHandler):
    """Its own checks, in its own order (bad input before the realm is asked); the caller's identity, the
    membership refresh and its failures as every running-server endpoint (server_handler.py)."""

    scope = SCOPE
    what = "GPU reservations"

    async def put(self, username: str, app: str):
        self._authorize(username)
        app = _checked_app(app)
        body = self._body()
        user, spawner = self._running_server(username)
        limits = spawner.catalog.serving  # the most one application may ask for
        most = limits.max_gpus_per_replica * limits.max_replicas
        if body["count"] > most:
            raise _bad("count", body["count"], f"a whole number of GPUs from 1 to {most} (the catalog's serving "
                                               "limits: max_gpus_per_replica × max_replicas)")
        team = spawner.selection.team
        await self._confirm_membership(user, spawner)
        gpu_type = self._gpu_type(spawner, team, body.get("gpu_type"))
        key = reservation_key(team, app)
        governance = spawner.governance
        before = spawner.pool.holder_of(key)
        allocation = dict(kind="model", team=team, user=username, gpu_type=gpu_type, model=app)
        try:  # the budget first (nothing recorded when it refuses), then the quota and the pool
            governance.admit(key, gpus=body["count"], **allocation)
        except BudgetExceeded as e:
            raise web.HTTPError(e.status, f"GPUs for served model {app!r} of {team}: {e.message}") from None
        try:
            alloc = spawner.pool.reserve_gpus(key, team, gpu_type, body["count"], durable=True)
        except SelectionError as e:
            if before is None:
                governance.release(key)
            else:  # the refused change keeps the old reservation: the ledger too (a shrink is always admitted)
                governance.admit(key, gpus=len(before.devices), **{**allocation, "gpu_type": before.gpu_type})
            raise web.HTTPError(e.status, f"GPUs for served model {app!r} of {team}: {e}") from None
        governance.record("redeploy" if before else "deploy", actor=username, team=team, target=key,
                          outcome="succeeded", details={"gpu_type": gpu_type, "gpus": len(alloc.devices)})
        self.log.info("Reserved %s %s GPU(s) %s for %s (by %s)", len(alloc.devices), gpu_type,
                      ",".join(alloc.devices), key, username)
        self.finish({"key": key, "team": team, "gpu_type": gpu_type, "count": len(alloc.devices),
                     "devices": list(alloc.devices)})

    async def delete(self, username: str, app: str):
        self._authorize(username)
        app = _checked_app(app)
        _, spawner = self._running_server(username)
        key = reservation_key(spawner.selection.team, app)
        # The endpoint is gone: its rollout candidate's GPUs too (rollout_gpu_handler.py).
        for held in (key, candidate_key(spawner.selection.team, app)):
            if spawner.pool.holder_of(held) is not None:
                spawner.pool.release(held)
                governance = spawner.governance
                governance.release(held)
                governance.record("delete", actor=username, team=spawner.selection.team, target=held,
                                  outcome="succeeded")
                self.log.info("Released the GPUs of %s (by %s)", held, username)
        self.set_status(204)
        self.finish()

    # --- checks, in the order a caller learns of them: who, what, which server, which team -------------
    def _authorize(self, username: str) -> None:
        if self.current_user is None:
            raise web.HTTPError(403, "GPU reservations need authentication: send the server's token "
                                     "(JUPYTERHUB_API_TOKEN) as 'Authorization: token ...'")
        needed = f"{SCOPE}!user={username}"
        if not self.has_scope(needed):
            raise web.HTTPError(403, f"only {username}'s own servers may reserve GPUs for {username}'s served "
                                     f"models (scope {needed}); this token or session lacks it")

    def _body(self) -> dict:
        body = json_object(self.request.body or b"", FIELDS, '{"count": 1, "gpu_type": "t4"}',
                           "a JSON object with count and optionally gpu_type")
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise _bad("count", count, "a whole number of GPUs, at least 1 (release with DELETE)")
        gpu_type = body.get("gpu_type")
        if gpu_type is not None and not isinstance(gpu_type, str):
            raise _bad("gpu_type", gpu_type, "the name of a GPU type of the catalog")
        return body

    def _running_server(self, username: str):
        user, spawner = self.running_server(username, "GPUs for served models are reserved for the team of a "
                                                      "running server; start one from the hub")
        if getattr(spawner, "selection", None) is None or not hasattr(spawner, "pool"):
            raise web.HTTPError(409, f"the server of {username} has no team profile on the local backend: GPU "
                                     "reservations are for the local GPU pool only")
        return user, spawner

    async def _confirm_membership(self, user, spawner) -> None:
        # The S3 broker keeps when each user's groups were last read: one membership bound for the hub's endpoints.
        try:
            await broker(self.settings).confirm_membership(user.name, lambda: self._refresh_groups(user))
        except CredentialsUnavailable as e:
            raise web.HTTPError(e.status, str(e)) from None
        team = spawner.selection.team
        if team not in spawner.catalog.teams_of([group.name for group in user.groups]):
            raise web.HTTPError(403, f"{user.name} is no longer a member of team {team}: GPUs are reserved for "
                                     f"team members only. Ask a platform administrator to add {user.name} back, "
                                     "or deploy from a server of another team")

    def _gpu_type(self, spawner, team: str, asked: str | None) -> str:
        """The type asked for, else the server's own, else the team's only one."""
        catalog = spawner.catalog
        if asked is not None:
            if asked not in catalog.gpu_types:
                raise _bad("gpu_type", asked, ", ".join(catalog.gpu_types))
            return asked
        if spawner.selection.gpu_type:
            return spawner.selection.gpu_type
        types = [t for t, n in catalog.teams[team].gpu_quota.per_type.items() if n and t in catalog.gpu_types]
        if len(types) == 1:
            return types[0]
        if not types:
            raise web.HTTPError(409, f"team {team} has no GPU quota (teams.{team}.gpu_quota.per_type in the catalog)")
        raise web.HTTPError(400, f"gpu_type: needed, team {team} has several ({', '.join(types)}) and this server "
                                 "has no GPU; allowed: one of them, or deploy from a server of the type to serve on")


def _checked_app(app: str) -> str:
    if not (len(app) <= MAX_DNS_LABEL and DNS_LABEL.fullmatch(app)):
        raise _bad("app", app, f"a DNS label of at most {MAX_DNS_LABEL} lowercase letters, digits and '-', "
                               "starting with a letter and ending with a letter or digit")
    return app
