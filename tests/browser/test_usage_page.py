"""The usage page in a real browser: log in through the hub (SSO), follow the service's OAuth login to its
usage page, read the chart and the tables, change the period, download the weekly digest, filter the
audit log. A member sees only their own team.

Usage is seeded in March 2025 (support/usage_seed.py): team-vision 22 GPU-hours ($74.80), team-nlp 36
($19.80); one audit record is appended for the audit filter.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import expect

from mlplatform_service.audit_log import AuditLog

from ..support.usage_seed import seed_march_2025, service_ledger
from .lab import sso_login

pytestmark = pytest.mark.browser

USAGE = "/services/mlplatform/usage"


@pytest.fixture
def seeded(platform):
    ledger = service_ledger(platform)
    seed_march_2025(ledger)
    AuditLog(ledger.sessions).append("promote", actor="alice", team="team-vision", target="models/usage-page-demo",
                                     outcome="refused", details={"why": "<b>gates failed</b>"})


async def table(page, which: str) -> list[list[str]]:
    rows = page.locator(f"#table-{which} tbody tr")
    return [[c.strip() for c in await rows.nth(i).locator("td").all_inner_texts()] for i in range(await rows.count())]


async def test_an_admin_reads_usage_downloads_the_digest_and_filters_the_audit_log(page, shot, seeded):
    await sso_login(page, "admin")
    await page.goto(USAGE)  # → the hub's OAuth (no confirmation page for the platform's own service) → the page
    await page.wait_for_url(re.compile(r"/services/mlplatform/usage$"))
    await expect(page.locator("#who")).to_have_text(re.compile(r"admin\s+—\s+platform admin"))
    this_month = datetime.now(UTC).strftime("%Y-%m")
    assert await page.locator("#month").input_value() == this_month  # the default period: this month
    await expect(page.locator("#chart svg")).to_be_visible()
    await expect(page.locator(".budget[data-team=team-vision] .line")).to_contain_text("of 500 GPU-hours")
    await shot("usage_this_month")

    await page.fill("#month", "2025-03")
    await page.click("#apply")
    await page.wait_for_url(re.compile(r"month=2025-03"))
    await expect(page.locator("#period")).to_have_text("GPU usage, 2025-03-01 to 2025-03-31 (UTC)")
    assert await table(page, "team") == [["team-nlp", "36", "$19.80"], ["team-vision", "22", "$74.80"]]
    assert await table(page, "user") == [["team-nlp", "bob", "36", "$19.80"], ["team-vision", "alice", "22", "$74.80"]]
    assert await table(page, "profile") == [["team-vision", "gpu-a100", "20", "$68"], ["team-nlp", "gpu-t4", "12", "$6.60"]]
    assert await table(page, "model") == [["team-nlp", "sentiment", "24", "$13.20"]]
    bars = await page.locator("#chart svg rect title").all_text_contents()
    assert bars == ["team-vision, Mar 10: 20 GPU-hours", "team-nlp, Mar 11: 24 GPU-hours",
                    "team-nlp, Mar 12: 12 GPU-hours", "team-vision, Mar 13: 2 GPU-hours"]
    await shot("usage_march_2025")

    await page.fill("#week", "2025-03-12")
    await page.click("#apply")
    await expect(page.locator("#digest")).to_contain_text("week 11 of 2025")
    async with page.expect_download() as info:
        await page.click("#digest-csv")
    download = await info.value
    assert download.suggested_filename == "mlplatform-usage-2025-W11.csv"
    lines = Path(await download.path()).read_text().splitlines()
    assert lines[0] == "week,team,user,kind,profile,model,gpu_type,gpu_hours,cost,currency"
    assert "2025-W11,team-vision,alice,server,gpu-a100,,a100,20.000,68.00,USD" in lines and len(lines) == 5

    today = datetime.now(UTC).date().isoformat()
    await page.fill("#audit_actor", "alice")
    await page.select_option("#audit_action", "promote")
    await page.fill("#audit_from", today)
    await page.fill("#audit_to", today)
    await page.click("#audit-apply")
    await page.wait_for_url(re.compile(r"audit_action=promote"))
    assert await page.locator("#month").input_value() == "2025-03"  # the usage period stays as chosen
    rows = page.locator("#audit tbody tr", has_text="models/usage-page-demo")
    await expect(rows).to_have_count(1)
    assert "<b>gates failed</b>" in await rows.locator("td.details").inner_text()  # shown as text, not markup
    href = await page.locator("#audit-csv").get_attribute("href")
    assert href.startswith("api/audit/export?since=") and "actor=alice" in href and "action=promote" in href
    async with page.expect_download() as info:
        await page.click("#audit-csv")
    exported = Path(await (await info.value).path()).read_text().splitlines()
    assert exported[0].startswith("seq,") and any("models/usage-page-demo" in line for line in exported[1:])
    await shot("usage_audit_filtered")


async def test_a_member_sees_only_her_team(page, shot, seeded):
    await sso_login(page, "alice")
    await page.goto(f"{USAGE}?month=2025-03")
    await page.wait_for_url(re.compile(r"/services/mlplatform/usage\?month=2025-03$"))
    await expect(page.locator("#teams-shown")).to_have_text("team-vision")
    assert await table(page, "team") == [["team-vision", "22", "$74.80"]]
    assert await table(page, "model") == [["none in this period"]]
    assert await page.locator("#audit, #team, .budget[data-team=team-nlp]").count() == 0
    assert "team-nlp" not in await page.content()
    await shot("usage_member")
