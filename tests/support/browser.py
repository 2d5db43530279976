"""Headless Chromium for the browser tests: one browser per session, a fresh context per test. The fixtures are
imported by tests/browser/conftest.py, and by a module outside tests/browser whose browser test shares that
module's costly fixtures (tests/integration/test_rollouts_service.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from ..conftest import ARTIFACTS

SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# Debian's chromium, never a downloaded one; no sandbox (containers), no background traffic.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install --test installs it (apt-get install chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


class Shots:
    """Numbered screenshots of one test: test-artifacts/screenshots/<test>-<nn>-<label>.png."""

    def __init__(self, page, test_name: str):
        self.page = page
        self.prefix = re.sub(r"[^\w.-]", "_", test_name)
        self.n = 0

    async def __call__(self, label: str) -> Path:
        self.n += 1
        path = SCREENSHOTS / f"{self.prefix}-{self.n:02d}-{label}.png"
        await self.page.screenshot(path=path, full_page=True)
        return path


@pytest.fixture
async def page(browser, platform, request):
    """A page in a fresh browser context (no cookies), pointed at the hub; screenshot on failure."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = await browser.new_context(base_url=platform.hub_url, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    # Generous: this machine has 2 cores, and the platform's processes share them.
    page.set_default_timeout(30_000)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        await Shots(page, request.node.name)("FAILED")
    await context.close()


@pytest.fixture
def shot(page, request):
    """`await shot("label")` saves a full-page screenshot of the test's page."""
    return Shots(page, request.node.name)
