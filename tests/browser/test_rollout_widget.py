"""Rollout in a real JupyterLab: alice's endpoint serves @champion with a candidate in shadow (started by the
fixture, through the platform service); alice logs in, opens a notebook, runs `Rollout()`, chooses the endpoint,
sees the live panel (both sides, the gate rows, the charts) fill, clicks Abort, and the page shows the
endpoint back on one model, which then answers every request with the champion.

The endpoint is test_rollouts_service's fixture (alice's server, the platform's Ray head, a slow-on-rare
candidate); its Ray head is stopped when the module ends.
"""

from __future__ import annotations

import re

import pytest
import requests
from playwright.async_api import expect

from mlplatform import serving
from mlplatform.serving import rollouts

from ..integration.test_rollouts_service import send
from ..integration.test_rollouts_service import alice, endpoint  # noqa: F401  (the module's fixtures, shared)
from ..support.hub import PASSWORDS
from .lab import SPAWN_TIMEOUT, run_in_new_notebook

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::UserWarning")]

CELL = "from mlplatform.widgets import Rollout\nwidget = Rollout(poll_interval=1)\nwidget\n"


@pytest.fixture
def in_shadow(endpoint):  # noqa: F811
    """The endpoint with its candidate in shadow, running, and some traffic in its inference log."""
    status = rollouts.start(endpoint["app"], endpoint["candidate"], mode="shadow")
    assert status["rollout"]["model_version"] == endpoint["candidate"]
    assert serving.wait_until_settled(endpoint["app"], timeout=240, interval=0.3)["state"] == "running"
    send(endpoint["url"], 20, seed=5)
    yield endpoint
    if serving.status(endpoint["app"]).get("rollout"):  # the test failed before Abort
        rollouts.abort(endpoint["app"])


async def login_with_a_running_server(page, platform, user: str) -> None:
    """lab.sso_login's steps for a user whose server runs already: the hub's callback sends the browser
    straight to the server (/user/<name>/...), not to a /hub/ page."""
    await page.goto("/hub/login")
    await page.click("a:has-text('Sign in with Keycloak')")
    await page.wait_for_selector("#kc-form-login input[name=username]")
    await page.fill("#kc-form-login input[name=username]", user)
    await page.fill("#kc-form-login input[name=password]", PASSWORDS[user])
    await page.click("#kc-login")
    await page.wait_for_url(re.compile(rf"^{re.escape(platform.hub_url)}/(hub|user)/"))
    await page.wait_for_load_state()


async def test_rollout_widget_shows_the_live_panel_and_aborts_in_the_browser(page, shot, platform, in_shadow):
    app, name, candidate = in_shadow["app"], in_shadow["name"], in_shadow["candidate"]
    await login_with_a_running_server(page, platform, "alice")
    await page.goto("/user/alice/lab?reset")  # the launcher, whatever her workspace had open
    await page.wait_for_selector(".jp-LauncherCard", timeout=SPAWN_TIMEOUT)
    await run_in_new_notebook(page, CELL)
    widget = page.locator(".mlp-rollout")
    await expect(widget).to_be_visible(timeout=60_000)

    await widget.locator(".mlp-endpoint select").select_option(label=f"{app} — {name}", timeout=60_000)
    status = widget.locator(".mlp-rollout-status")
    await expect(status).to_contain_text(f"candidate version {candidate}", timeout=60_000)
    await expect(status).to_contain_text("shadow")

    # The live panel: both sides side by side with the traffic sent, each gate as a row, the two charts.
    sides = widget.locator(".mlp-sides")
    await expect(sides.locator("tr.mlp-side-requests td").nth(2)).to_have_text(re.compile(r"^[1-9]\d*$"),
                                                                                 timeout=60_000)
    await expect(sides).to_contain_text("Agreement:")
    await expect(sides).to_contain_text("Drift:")
    gates = widget.locator(".mlp-gates tr.mlp-gate")
    await expect(gates.first).to_be_visible()
    assert await gates.count() >= 4
    await expect(widget.locator(".mlp-gates")).to_contain_text("min_requests")
    await expect(widget.locator(".mlp-charts svg.mlp-chart")).to_have_count(2)
    await expect(widget.locator(".mlp-charts polyline.mlp-series-champion").first).to_be_attached(timeout=30_000)
    await expect(widget.locator("button.mlp-abort")).to_be_enabled()
    await expect(widget.locator(".mlp-errors")).to_have_text("")
    await shot("rollout_widget_live")
    await widget.locator(".mlp-charts").scroll_into_view_if_needed()
    await shot("rollout_widget_charts")

    await widget.locator("button.mlp-abort").click()
    await expect(widget.locator(".mlp-result")).to_contain_text("rollout ended", timeout=120_000)
    await expect(status).to_contain_text("one model, no rollout")
    await expect(status).to_contain_text("(running)", timeout=120_000)  # polled until the endpoint settles
    await expect(gates).to_have_count(0)
    await expect(widget.locator("button.mlp-start")).to_be_enabled()
    await expect(widget.locator(".mlp-errors")).to_have_text("")
    await shot("rollout_widget_aborted")

    assert serving.status(app)["rollout"] is None
    answers = {requests.post(in_shadow["url"], json=[{"x1": 0.1, "x2": 1.0}], timeout=30).headers["X-Model-Version"]
               for _ in range(10)}
    assert answers == {"1"}
