"""The platform service's usage, budget and metrics endpoints on the real local hub: numbers per role, the
authorization matrix, and what bad input gets.

Usage is seeded with the ledger itself in the service's database, in March 2025 (support/usage_seed.py).
Budgets are read now: asserted as what a seeded hour this month adds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlplatform_service.usage import period_bounds

from ..support.authz import authorization_matrix
from ..support.hub import HubClient
from ..support.usage_seed import allocate, seed_march_2025, service_ledger

MARCH = {"since": "2025-03-01", "until": "2025-04-01"}
ACCESS = "access:services!service=mlplatform"
ROLE = {"alice": "alice (team-vision member)", "bob": "bob (team-nlp member)", "admin": "admin (platform admin)"}


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture(scope="module")
def ledger(platform):
    return service_ledger(platform)


@pytest.fixture(scope="module")
def march(ledger):
    """March 2025: team-vision 22 GPU-hours ($74.80), team-nlp 36 ($19.80) (support/usage_seed.py)."""
    seed_march_2025(ledger)


@pytest.fixture(scope="module")
def service(platform):
    return f"http://127.0.0.1:{platform.ports.service}/services/mlplatform"


@pytest.fixture(scope="module")
def tokens(platform):
    hub = HubClient(platform)  # logins only: no server is started
    admin = hub.login("admin")
    return {"alice": hub.login("alice").new_token(), "bob": hub.login("bob").new_token(),
            "admin": admin.new_token(),
            "admin, access only": admin.new_token(scopes=[ACCESS]),
            "scraper": admin.new_token(scopes=["read:metrics", ACCESS])}


def get(service, path, token=None, **params):
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(f"{service}/{path}", params=params, headers=headers, timeout=30, allow_redirects=False)


def numbers(rows, *fields):
    return {tuple(r[f] for f in fields): (pytest.approx(r["gpu_hours"]), pytest.approx(r["cost"])) for r in rows}


def test_usage_per_role(service, tokens, march, authz):
    admin = get(service, "api/usage", tokens["admin"], **MARCH)
    authz.check("admin (platform admin)", "GET api/usage (every team)", admin, allowed=True)
    assert admin.json()["teams"] == ["team-vision", "team-nlp"] and admin.json()["currency"] == "USD"
    assert numbers(admin.json()["rows"], "team") == {("team-nlp",): (36, 19.8), ("team-vision",): (22, 74.8)}

    by_user = get(service, "api/usage", tokens["admin"], by="team,user,kind", **MARCH).json()["rows"]
    assert numbers(by_user, "team", "user", "kind") == {
        ("team-nlp", "bob", "model"): (24, 13.2), ("team-nlp", "bob", "server"): (12, 6.6),
        ("team-vision", "alice", "server"): (20, 68.0), ("team-vision", "alice", "spark"): (2, 6.8)}
    by_model = get(service, "api/usage", tokens["admin"], by="model", **MARCH).json()["rows"]
    assert numbers(by_model, "model") == {(None,): (34, 81.4), ("sentiment",): (24, 13.2)}

    alice = get(service, "api/usage", tokens["alice"], by="team,profile", **MARCH)
    authz.check("alice (team-vision member)", "GET api/usage (her teams)", alice, allowed=True)
    assert alice.json()["teams"] == ["team-vision"]
    assert numbers(alice.json()["rows"], "team", "profile") == {("team-vision", None): (2, 6.8),
                                                                ("team-vision", "gpu-a100"): (20, 68.0)}
    bob = get(service, "api/usage", tokens["bob"], by="user", **MARCH)
    authz.check("bob (team-nlp member)", "GET api/usage (his teams)", bob, allowed=True)
    assert numbers(bob.json()["rows"], "user") == {("bob",): (36, 19.8)}

    other = get(service, "api/usage", tokens["alice"], team="team-nlp", **MARCH)
    authz.check("alice (team-vision member)", "GET api/usage?team=team-nlp", other, allowed=False)
    assert other.json()["message"].startswith("alice may not see team-nlp's usage")
    admin_one = get(service, "api/usage", tokens["admin"], team="team-vision", **MARCH)
    authz.check("admin (platform admin)", "GET api/usage?team=team-vision", admin_one, allowed=True)
    assert numbers(admin_one.json()["rows"], "team") == {("team-vision",): (22, 74.8)}
    authz.check("no token", "GET api/usage", get(service, "api/usage"), allowed=False)


def test_usage_series_per_week(service, tokens, march):
    body = get(service, "api/usage", tokens["admin"], step="week", **MARCH).json()
    assert body["step"] == "week"
    assert [(p["start"], p["team"], round(p["gpu_hours"], 6)) for p in body["series"]] == [
        ("2025-03-10T00:00:00+00:00", "team-nlp", 36), ("2025-03-10T00:00:00+00:00", "team-vision", 22)]
    daily = get(service, "api/usage", tokens["alice"], step="day", by="user", **MARCH).json()["series"]
    assert [(p["start"][:10], p["user"], round(p["gpu_hours"], 6)) for p in daily] == [
        ("2025-03-10", "alice", 20), ("2025-03-13", "alice", 2)]


def test_the_weekly_digest_per_role(service, tokens, march, authz):
    admin = get(service, "api/usage/digest", tokens["admin"], week="2025-03-12", format="csv")
    authz.check("admin (platform admin)", "GET api/usage/digest (every team)", admin, allowed=True)
    assert admin.headers["Content-Type"].startswith("text/csv")
    assert admin.headers["Content-Disposition"] == 'attachment; filename="mlplatform-usage-2025-W11.csv"'
    assert admin.text.splitlines() == [
        "week,team,user,kind,profile,model,gpu_type,gpu_hours,cost,currency",
        "2025-W11,team-nlp,bob,model,,sentiment,t4,24.000,13.20,USD",
        "2025-W11,team-nlp,bob,server,gpu-t4,,t4,12.000,6.60,USD",
        "2025-W11,team-vision,alice,server,gpu-a100,,a100,20.000,68.00,USD",
        "2025-W11,team-vision,alice,spark,,,a100,2.000,6.80,USD"]
    alice = get(service, "api/usage/digest", tokens["alice"], week="2025-W11", format="md")
    authz.check("alice (team-vision member)", "GET api/usage/digest (her team's rows)", alice, allowed=True)
    assert alice.headers["Content-Type"].startswith("text/markdown")
    assert alice.text.startswith("# GPU usage, week 11 of 2025 (Mon 10 Mar – Sun 16 Mar 2025, UTC)")
    assert "## team-vision: 22 GPU-hours, $74.80" in alice.text and "team-nlp" not in alice.text
    other = get(service, "api/usage/digest", tokens["alice"], week="2025-03-12", team="team-nlp")
    authz.check("alice (team-vision member)", "GET api/usage/digest?team=team-nlp", other, allowed=False)
    authz.check("no token", "GET api/usage/digest", get(service, "api/usage/digest"), allowed=False)


def test_budgets_per_role(service, tokens, ledger, authz):
    def vision(token):
        return get(service, "api/budgets/team-vision", token).json()

    before = vision(tokens["alice"])
    start = period_bounds("month", datetime.now(UTC))[0]
    allocate(ledger, "seed:server:alice-now", start, start + timedelta(hours=1), kind="server", team="team-vision",
             user="alice", profile="gpu-a100", gpu_type="a100", gpus=1)                       # 1 h, $3.40
    after = vision(tokens["alice"])
    assert after["used_gpu_hours"] - before["used_gpu_hours"] == pytest.approx(1, abs=0.01)
    assert after["used_cost"] - before["used_cost"] == pytest.approx(3.4, abs=0.05)
    assert (after["period"], after["budget_gpu_hours"], after["budget_cost"], after["has_budget"]) == (
        "month", 500, 2000, True)
    assert after["line"].startswith("team-vision: ") and after["line"].endswith(f"used in {start:%B}")
    assert after["period_start"] == start.isoformat()

    listing = {who: get(service, "api/budgets", tokens[who]) for who in ("alice", "bob", "admin")}
    for who, r in listing.items():
        authz.check(ROLE[who], "GET api/budgets (their teams; admin: all)", r, allowed=True)
    assert [b["team"] for b in listing["alice"].json()["budgets"]] == ["team-vision"]
    assert [b["team"] for b in listing["bob"].json()["budgets"]] == ["team-nlp"]
    assert [b["team"] for b in listing["admin"].json()["budgets"]] == ["team-vision", "team-nlp"]
    nlp = listing["bob"].json()["budgets"][0]
    assert (nlp["has_budget"], nlp["fraction"], nlp["warning"], nlp["exceeded"]) == (False, None, False, False)

    authz.check("alice (team-vision member)", "GET api/budgets/team-nlp",
                get(service, "api/budgets/team-nlp", tokens["alice"]), allowed=False)
    authz.check("admin (platform admin)", "GET api/budgets/team-nlp",
                get(service, "api/budgets/team-nlp", tokens["admin"]), allowed=True)
    authz.check("no token", "GET api/budgets", get(service, "api/budgets"), allowed=False)
    missing = get(service, "api/budgets/team-nope", tokens["admin"])
    assert (missing.status_code, missing.json()["message"]) == (
        404, "no team 'team-nope' in the catalog; teams: team-vision, team-nlp")


def test_metrics_need_the_read_metrics_scope(service, tokens, march, authz):
    for who, allowed in (("admin", True), ("scraper", True), ("admin, access only", False), ("alice", False)):
        r = get(service, "metrics", tokens[who])
        authz.check(f"{who}'s token", "GET metrics", r, allowed=allowed)
        if not allowed:
            assert "lacks the read:metrics scope" in r.json()["message"]
    authz.check("no token", "GET metrics", get(service, "metrics"), allowed=False)
    r = get(service, "metrics", tokens["scraper"])
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    period = datetime.now(UTC).strftime("%Y-%m")
    used = {s.labels["team"]: s for s in families["mlplatform_gpu_hours_used"].samples}
    assert set(used) == {"team-vision", "team-nlp"} and used["team-vision"].labels["period"] == period
    assert [(s.labels, s.value) for s in families["mlplatform_budget_gpu_hours"].samples] == [
        ({"team": "team-vision", "period": period}, 500.0)]


@pytest.mark.parametrize(("path", "params", "message"), [
    ("api/usage", {"since": "yesterday"}, "since 'yesterday' is not allowed; allowed: a date (2026-12-01"),
    ("api/usage", {"since": "2025-03-01T00:00:00"}, "since '2025-03-01T00:00:00' has no offset; allowed: "),
    ("api/usage", {"since": "2025-03-02", "until": "2025-03-01"}, "until 2025-03-01T00:00:00+00:00 is not after "
                                                                  "since 2025-03-02T00:00:00+00:00"),
    ("api/usage", {"by": "team,colour"}, "by 'team,colour' is not allowed; allowed: one or more of team, user,"),
    ("api/usage", {"step": "month"}, "step 'month' is not allowed; allowed: day, week"),
    ("api/usage", {"step": "day", "since": "2020-01-01", "until": "2025-01-01"}, "step 'day' over 1827 days"),
    ("api/usage", {"team": "team-nope"}, "team 'team-nope' is not a team of the catalog; allowed: team-vision, "),
    ("api/usage/digest", {"format": "pdf"}, "format 'pdf' is not allowed; allowed: csv, md"),
    ("api/usage/digest", {"week": "last"}, "week 'last' is not allowed; allowed: a date (YYYY-MM-DD) in the week"),
])
def test_bad_input_gets_400_naming_the_field_the_value_and_what_is_allowed(service, tokens, path, params, message):
    r = get(service, path, tokens["admin"], **params)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(message)


def test_the_page_per_role_and_its_bad_input(service, tokens, march, authz):
    root = get(service, "", tokens["alice"])
    assert (root.status_code, root.headers["Location"]) == (302, "/services/mlplatform/usage")
    page = get(service, "usage", tokens["alice"], month="2025-03")
    authz.check("alice (team-vision member)", "GET usage (the page)", page, allowed=True)
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script runs
    html = page.text
    assert "GPU usage, 2025-03-01 to 2025-03-31 (UTC)" in html and "<svg" in html
    assert "team-nlp" not in html and "sentiment" not in html and 'id="audit"' not in html
    assert "<td>team-vision</td><td>gpu-a100</td>" in html and "$74.80" in html
    assert 'href="api/usage/digest?week=2025-03-31&amp;format=csv"' in html

    admin = get(service, "usage", tokens["admin"], month="2025-03", week="2025-03-12", audit_action="login")
    authz.check("admin (platform admin)", "GET usage (the page, with the audit log)", admin, allowed=True)
    assert "sentiment" in admin.text and 'id="audit"' in admin.text and "$94.60" in admin.text
    assert 'href="api/usage/digest?week=2025-03-10&amp;format=md"' in admin.text
    assert 'href="api/audit/export?since=2025-03-01T00%3A00%3A00%2B00%3A00&amp;until=2025-04-01T00%3A00%3A00' \
           '%2B00%3A00&amp;action=login&amp;format=csv"' in admin.text

    bad = get(service, "usage", tokens["alice"], month="2025-13", audit_action="<script>")
    assert bad.status_code == 400 and bad.headers["Content-Type"].startswith("text/html")
    assert "month &#39;2025-13&#39; is not allowed; allowed: a month as YYYY-MM" in bad.text
    bad_audit = get(service, "usage", tokens["admin"], audit_action="<script>")
    assert bad_audit.status_code == 400 and "<script>" not in bad_audit.text
    assert "audit_action &#39;&lt;script&gt;&#39; is not allowed; allowed: login, " in bad_audit.text
    other = get(service, "usage", tokens["alice"], team="team-nlp")
    authz.check("alice (team-vision member)", "GET usage?team=team-nlp (the page)", other, allowed=False)
    # A browser without the service's login: to the hub's OAuth (the browser test follows it through).
    anonymous = get(service, "usage")
    assert anonymous.status_code == 302 and "/hub/api/oauth2/authorize" in anonymous.headers["Location"]
