"""Local workloads in the audit log, as the user's notebook server reports them: `POST api/activity`.

On Kubernetes the API server sends every write of a RayService or SparkApplication to the service's
admission webhook (workloads.py), which records it: nothing the notebook says is needed, and this
endpoint answers 409 there. On the local backend Ray Serve and spark-submit run on this machine as the
same OS user as the user's notebook code, so no component but the notebook server itself sees a deploy
or a submit happen. After one succeeds, the server's backend (mlplatform.platform_service.report) calls
this endpoint with the server's own hub token:

    POST api/activity {"action": "deploy", "kind": "model", "name": "iris", "team": "team-vision",
                       "details": {"model_version": "3"}}
    → 201 {"record": {"seq": ..., "actor": "alice", "action": "deploy", "target": "model:team-vision/iris",
                      "outcome": "succeeded", "details": {"model_version": "3", "via": "local",
                                                          "reported_by": "server"}, ...}}

The actor is the hub's: the user the token belongs to (a body naming an actor or user is refused, 400),
and the team must be one of that user's teams as the hub's groups and the catalog say (403 otherwise,
and the refused report is itself recorded, `refused`, as promotion records a refused change). What the
record cannot be is a wall: the user's code could skip the report or send one for something that did
not happen. It is evidence of what the platform's own APIs did, marked `"reported_by": "server"`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mlplatform_core.catalog import Catalog
from mlplatform_core.names import DNS_LABEL, MAX_DNS_LABEL
from tornado import web

from .service_handler import ServiceHandler, authenticated

# What a local backend does, per kind of workload (the audit log's actions; the target's kind).
ACTIVITIES = {"model": ("deploy", "redeploy", "delete"), "spark": ("submit", "cancel")}
FIELDS = ("action", "kind", "name", "team", "details")
# Set by the service on every record: a report cannot claim another source.
SOURCE = {"via": "local", "reported_by": "server"}
MAX_BODY = 16 * 1024  # bytes
MAX_DETAILS = 20  # values in `details`
MAX_DETAIL_TEXT = 256  # characters of a string value
DETAIL_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MAX_INTEGER = 2**53  # exact in every JSON reader
ON_KUBERNETES = ("on Kubernetes the API server's admission webhook records these (deploy, redeploy, delete, "
                 "submit, cancel of RayServices and SparkApplications); reports are for the local backend")


@dataclass(frozen=True)
class Report:
    """One reported action of the caller's server, checked."""

    action: str
    kind: str
    name: str
    team: str
    details: dict

    @property
    def target(self) -> str:
        return f"{self.kind}:{self.team}/{self.name}"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(field: str, value, allowed: str) -> web.HTTPError:
    return web.HTTPError(400, f"{field}: {_shown(value)} is not allowed; allowed: {allowed}")


def refuse_on_kubernetes(catalog: Catalog) -> None:
    """409 unless the platform runs on the local backend (where only the server sees its workloads)."""
    if catalog.platform.backend != "local":
        raise web.HTTPError(409, ON_KUBERNETES)


def parse_report(body: dict, catalog: Catalog, caller: str) -> Report:
    """The report in `body`, or a 400 naming the field, the value and what is allowed. `caller` is the hub
    user the request is authenticated as (for the message refusing an actor in the body)."""
    for key, value in body.items():
        if key in ("actor", "user"):
            raise _bad(key, value, f"no {key} field: the actor is the user the hub authenticated for this "
                                   f"request ({caller}); the fields are {', '.join(FIELDS)}")
        if key not in FIELDS:
            raise _bad(key, value, f"the fields {', '.join(FIELDS)}")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in ACTIVITIES:
        raise _bad("kind", kind, ", ".join(ACTIVITIES))
    action = body.get("action")
    if action not in ACTIVITIES[kind]:
        raise _bad("action", action, f"for kind {kind!r}: {', '.join(ACTIVITIES[kind])}")
    name = body.get("name")
    if not (isinstance(name, str) and len(name) <= MAX_DNS_LABEL and DNS_LABEL.fullmatch(name)):
        raise _bad("name", name, f"a DNS label of at most {MAX_DNS_LABEL} lowercase letters, digits and '-', "
                                 "starting with a letter and ending with a letter or digit (the served model's "
                                 "name, the Spark application's id)")
    team = body.get("team")
    if not isinstance(team, str) or team not in catalog.teams:
        raise _bad("team", team, f"the team of the server that did it, one of: {', '.join(catalog.teams)}")
    return Report(action=action, kind=kind, name=name, team=team, details=_details(body.get("details")))


def _details(details) -> dict:
    if details is None:
        return {}
    allowed = (f"an object of at most {MAX_DETAILS} values, each a string of at most {MAX_DETAIL_TEXT} "
               f"characters, a whole number, a finite number, true, false or null, under keys of 1 to 64 letters, "
               f"digits, '_', '.', '-' (starting with a letter) other than {', '.join(SOURCE)}")
    if not isinstance(details, dict) or len(details) > MAX_DETAILS:
        raise _bad("details", details, allowed)
    for key, value in details.items():
        field = f"details.{key}"
        if not DETAIL_KEY.fullmatch(key) or key in SOURCE:
            raise _bad("details key", key, allowed)
        if isinstance(value, str):
            if len(value) > MAX_DETAIL_TEXT or not _utf8(value):
                raise _bad(field, value, allowed)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if abs(value) > MAX_INTEGER:
                raise _bad(field, value, f"whole numbers from -2**53 to 2**53; {allowed}")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _bad(field, value, allowed)
        else:
            raise _bad(field, value, allowed)
    return dict(details)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        return False
    return True


class ActivityHandler(ServiceHandler):
    """`POST api/activity`: record an action of the caller's own server on the local backend."""

    @authenticated
    async def post(self):
        if len(self.request.body) > MAX_BODY:
            raise web.HTTPError(413, f"the report is {len(self.request.body)} bytes; allowed: at most {MAX_BODY}")
        catalog = self.platform.catalog()
        refuse_on_kubernetes(catalog)
        report = parse_report(self.body(), catalog, self.current_user["name"])
        caller = await self.caller()
        audit = self.platform.audit
        if report.team not in caller.teams:
            reason = (f"{caller.name} may not report {report.action} of {report.target}: it is not a team of "
                      f"{caller.name}'s ({', '.join(caller.teams) or 'none'}); a server reports what it did for "
                      "its own team")
            await self.run(audit.append, report.action, actor=caller.name, team=report.team, target=report.target,
                           outcome="refused", details={"reason": reason, **SOURCE})
            raise web.HTTPError(403, reason)
        record = await self.run(audit.append, report.action, actor=caller.name, team=report.team,
                                target=report.target, outcome="succeeded", details={**report.details, **SOURCE})
        self.reply({"record": record}, status=201)
