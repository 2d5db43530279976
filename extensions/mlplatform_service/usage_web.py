"""The service's usage endpoints and the usage page: GPU-hours, cost and budgets, per team, user, profile and
served model; the weekly digest; Prometheus metrics; for admins, the audit log with filters.

Who sees what. The catalog has no "team lead" role: a team's usage and budget are shown to every member
of the team (the hub's groups, as the catalog maps them), so a lead is simply a member; platform admins
(the hub's admin flag) see every team and the audit log. A user in no team, and not an admin, sees nothing
(403). `metrics` is for tokens holding JupyterHub's `read:metrics` scope, the rule of the hub's own
/hub/metrics: admins' unrestricted tokens hold it, and a Prometheus scraper is given a token of a role with
`read:metrics` and `access:services!service=mlplatform`. A browser's login to the service carries neither.

    GET api/budgets                     [BudgetStatus, ...] of the caller's teams (admins: every team)
    GET api/budgets/<team>              one team's (403: not a member and not an admin; 404: no such team)
    GET api/usage?since&until&by&step&team
                                        {"rows": [...]} (and "series" with step): GPU-hours and cost in
                                        [since, until) (default: this month), grouped by `by` (default team)
    GET api/usage/digest?week&format&team
                                        the weekly digest as a download (csv | md; default: last complete week)
    GET metrics                         Prometheus text (metrics.py)
    GET usage                           the page (the prefix itself redirects here)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.utils import url_path_join
from markupsafe import Markup
from tornado import web

from . import usage_charts
from .audit_log import ACTIONS, OUTCOMES
from .budgets import BudgetStatus
from .metrics import exposition
from .service_handler import ServiceHandler, authenticated
from .usage import UsageLedger, hours_text, money_text, period_id, period_label
from .usage_query import (DIGEST_FORMATS, Window, bucket_starts, default_week, parse_by, parse_day, parse_format,
                          parse_page_window, parse_step, parse_week, parse_window)

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True))
TEMPLATES.filters.update(hours=hours_text, money=money_text)
AUDIT_PAGE_LIMIT = 200
# The page runs no script and loads nothing from elsewhere: charts are inline SVG, styles inline.
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'self'")


# -- who may see which team --------------------------------------------------------------------------------

def teams_in_view(caller, catalog, team: str | None) -> tuple[str, ...]:
    """The teams whose usage `caller` sees, narrowed to `team` when given: the caller's own teams, every team
    for admins. ValueError (400) for a team the catalog lacks; 403 for another team's, or for no team."""
    if team:
        if team not in catalog.teams:
            raise ValueError(f"team {team!r} is not a team of the catalog; allowed: {', '.join(catalog.teams)}")
        if not caller.admin and team not in caller.teams:
            raise web.HTTPError(403, f"{caller.name} may not see {team}'s usage: it is shown to the team's members "
                                     f"and platform admins ({caller.name}'s teams: {', '.join(caller.teams) or 'none'})")
        return (team,)
    if caller.admin:
        return tuple(catalog.teams)
    if not caller.teams:
        raise web.HTTPError(403, f"{caller.name} is in no team of the catalog: usage and budgets are shown to "
                                 "a team's members and platform admins")
    return tuple(caller.teams)


def usage_of(ledger: UsageLedger, window: Window, teams: tuple[str, ...], *, by: tuple[str, ...],
             step: str | None = None) -> list[dict]:
    """The ledger's usage rows (or with `step`, its series points) of `teams` only."""
    def one(team):
        if step:
            return ledger.series(window.since, window.until, step=step, by=by, team=team)
        return ledger.usage(window.since, window.until, by=by, team=team)

    if set(teams) == set(ledger.catalog().teams):
        return one(None)
    rows = [row for team in teams for row in one(team)]
    if "team" in by or len(teams) < 2:
        return rows
    merged: dict[tuple, dict] = {}  # the same group in several teams: one row
    for row in rows:
        key = tuple(row.get(name) for name in ("start", *by))
        if key in merged:
            merged[key] = {**merged[key], "gpu_hours": merged[key]["gpu_hours"] + row["gpu_hours"],
                           "cost": merged[key]["cost"] + row["cost"]}
        else:
            merged[key] = row
    return sorted(merged.values(), key=lambda r: [(r.get(n) is not None, r.get(n) or "") for n in ("start", *by)])


def budget_json(status: BudgetStatus) -> dict:
    out = asdict(status)
    out.update(period_start=status.period_start.isoformat(), period_end=status.period_end.isoformat(),
               has_budget=status.has_budget)
    return out


def _json_point(row: dict) -> dict:
    return {**row, "start": row["start"].isoformat()} if "start" in row else row


# -- the JSON API ------------------------------------------------------------------------------------------

class UsageBase(ServiceHandler):
    def arg(self, name: str) -> str | None:
        value = self.get_argument(name, None)
        return value if value else None

    def now(self) -> datetime:
        return self.platform.ledger.clock()


class BudgetsHandler(UsageBase):
    @authenticated
    async def get(self, team: str | None = None):
        caller = await self.caller()
        catalog = self.platform.catalog()
        if team is not None and team not in catalog.teams:
            raise web.HTTPError(404, f"no team {team!r} in the catalog; teams: {', '.join(catalog.teams)}")
        teams = teams_in_view(caller, catalog, team)
        statuses = [s for s in await self.run(self.platform.budgets.statuses) if s.team in teams]
        if team is not None:
            self.reply(budget_json(statuses[0]))
        else:
            self.reply({"budgets": [budget_json(s) for s in statuses]})


class UsageHandler(UsageBase):
    @authenticated
    async def get(self):
        window = parse_window(self.arg("since"), self.arg("until"), self.now())
        by = parse_by(self.arg("by"))
        step = parse_step(self.arg("step"), window)
        caller = await self.caller()
        catalog = self.platform.catalog()
        teams = teams_in_view(caller, catalog, self.arg("team"))
        ledger = self.platform.ledger
        rows = await self.run(usage_of, ledger, window, teams, by=by)
        body = {"since": window.since.isoformat(), "until": window.until.isoformat(), "by": list(by),
                "teams": list(teams), "currency": catalog.platform_service.currency, "rows": rows}
        if step:
            body["step"] = step
            body["series"] = [_json_point(p) for p in await self.run(usage_of, ledger, window, teams, by=by, step=step)]
        self.reply(body)


class DigestHandler(UsageBase):
    @authenticated
    async def get(self):
        week = parse_week(self.arg("week"), self.now())
        fmt = parse_format(self.arg("format"))
        caller = await self.caller()
        catalog = self.platform.catalog()
        teams = teams_in_view(caller, catalog, self.arg("team"))
        every = set(teams) == set(catalog.teams)
        csv_text, markdown = await self.run(self.platform.ledger.digest, week, None if every else teams)
        self.set_header("Content-Type", DIGEST_FORMATS[fmt])
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Disposition",
                        f'attachment; filename="mlplatform-usage-{period_id("week", week)}.{fmt}"')
        self.finish(csv_text if fmt == "csv" else markdown)


class MetricsHandler(UsageBase):
    @authenticated
    async def get(self):
        if not self.hub_auth.check_scopes("read:metrics", self.current_user):
            raise web.HTTPError(403, f"{self.current_user.get('name')}'s token lacks the read:metrics scope: "
                                     "metrics are for tokens of admins or of a role with read:metrics")
        body, content_type = await self.run(exposition, self.platform.ledger, self.platform.budgets)
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


# -- the page ----------------------------------------------------------------------------------------------

class UsagePageHandler(UsageBase):
    """The usage page: server-rendered HTML, no script. Bad input renders the page's error view (400)."""

    @web.authenticated  # a browser without the service's login cookie goes through the hub's OAuth
    async def get(self):
        caller = await self.caller()
        catalog = self.platform.catalog()
        now = self.now()
        window = parse_page_window(self.arg("month"), self.arg("from"), self.arg("to"), now)
        step = parse_step(self.arg("step"), window) or ("day" if window.days <= 62 else "week")
        week = parse_week(self.arg("week"), now) if self.arg("week") else default_week(window, now)
        team = self.arg("team")
        teams = teams_in_view(caller, catalog, team)
        audit = self.audit_filters(window) if caller.admin else None
        data = await self.run(page_data, self.platform, teams, window, step, audit)
        shown = {"month": self.arg("month") or "", "from": self.arg("from") or "", "to": self.arg("to") or "",
                 "step": step, "team": team or "", "week": week.date().isoformat()}
        digest_query = {"week": week.date().isoformat(), **({"team": team} if team else {})}
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.set_header("Cache-Control", "no-store")
        self.finish(TEMPLATES.get_template("usage.html").render(
            caller=caller, catalog=catalog, teams=teams, visible_teams=teams_in_view(caller, catalog, None),
            window=window, last_day=(window.until - timedelta(days=1)).date(), now=now, step=step, shown=shown,
            week_label=period_label("week", week), currency=catalog.platform_service.currency,
            digest_csv="api/usage/digest?" + urlencode({**digest_query, "format": "csv"}),
            digest_md="api/usage/digest?" + urlencode({**digest_query, "format": "md"}),
            audit=audit, audit_actions=ACTIONS, audit_outcomes=OUTCOMES,
            audit_export={fmt: "api/audit/export?" + urlencode({**audit["query"], "format": fmt})
                          for fmt in ("csv", "jsonl")} if audit else None,
            usage_params={k: v for k, v in shown.items() if v},
            hub_home=url_path_join(self.hub_auth.hub_prefix, "home"), **data))

    def audit_filters(self, window: Window) -> dict:
        """The audit table's filters (its own dates default to the usage period), as the page shows them and
        as api/audit/export takes them."""
        form = {name: self.arg(f"audit_{name}") or "" for name in ("actor", "team", "action", "outcome", "from", "to")}
        since = parse_day("audit_from", form["from"]) if form["from"] else window.since
        until = parse_day("audit_to", form["to"]) + timedelta(days=1) if form["to"] else window.until
        for name, allowed in (("action", ACTIONS), ("outcome", OUTCOMES)):
            if form[name] and form[name] not in allowed:
                raise ValueError(f"audit_{name} {form[name]!r} is not allowed; allowed: {', '.join(allowed)}")
        query = {"since": since.isoformat(), "until": until.isoformat(),
                 **{k: form[k] for k in ("actor", "team", "action", "outcome") if form[k]}}
        return {"form": form, "query": query}

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(error, web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        elif isinstance(error, ValueError):
            message = str(error)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.finish(TEMPLATES.get_template("usage_error.html").render(
            status=status_code, message=message, hub_home=url_path_join(self.hub_auth.hub_prefix, "home")))


def page_data(platform, teams: tuple[str, ...], window: Window, step: str, audit: dict | None) -> dict:
    """Everything the page shows, read in one go off the event loop."""
    ledger = platform.ledger
    starts = bucket_starts(window, step)
    series = usage_charts.stacks(usage_of(ledger, window, teams, by=("team",), step=step), starts, "team")
    catalog_teams = list(ledger.catalog().teams)  # a team's colour and place in the stack: its place in the catalog
    chart = usage_charts.stacked_bars(
        [usage_charts.bucket_label(s, step) for s in starts],
        dict(sorted(series.items(), key=lambda item: catalog_teams.index(item[0]))),
        colours={team: usage_charts.PALETTE[i % len(usage_charts.PALETTE)] for i, team in enumerate(catalog_teams)},
        title=f"GPU-hours per {step} and team, {window.since:%Y-%m-%d} to "
              f"{(window.until - timedelta(days=1)):%Y-%m-%d} (UTC)")

    def table(field: str) -> list[dict]:
        rows = usage_of(ledger, window, teams, by=("team", field) if field != "team" else ("team",))
        return sorted((r for r in rows if r.get(field) is not None), key=lambda r: (-r["gpu_hours"], r["team"]))

    tables = {field: table(field) for field in ("team", "user", "profile", "model")}
    budgets = [s for s in platform.budgets.statuses() if s.team in teams]
    records = None
    if audit is not None:
        records = platform.audit.query(limit=AUDIT_PAGE_LIMIT + 1, **audit["query"])
        for record in records:
            record["details_text"] = json.dumps(record["details"], sort_keys=True, ensure_ascii=False)
    return {"chart": Markup(chart), "tables": tables, "budgets": budgets, "audit_records": records,
            "audit_limit": AUDIT_PAGE_LIMIT, "totals": {
                field: (sum(r["gpu_hours"] for r in rows), sum(r["cost"] for r in rows))
                for field, rows in tables.items()}}


class RootHandler(ServiceHandler):
    def get(self):
        self.redirect(url_path_join(self.request.path, "usage"))


def usage_routes(prefix: str) -> list[tuple]:
    api = url_path_join(prefix, "api")
    return [
        (url_path_join(api, r"budgets/?"), BudgetsHandler),
        (url_path_join(api, r"budgets/([^/]+)"), BudgetsHandler),
        (url_path_join(api, r"usage/?"), UsageHandler),
        (url_path_join(api, r"usage/digest"), DigestHandler),
        (url_path_join(prefix, "metrics"), MetricsHandler),
        (url_path_join(prefix, "usage"), UsagePageHandler),
        (prefix.rstrip("/") + "/?", RootHandler),
    ]

