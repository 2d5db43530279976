"""The golden path in a real browser: SSO login → spawn form → JupyterLab → a notebook cell that logs to MLflow.

Headless Chromium drives the local platform (dev OIDC provider, MLflow, JupyterHub) started once per
session by the `platform` fixture. Screenshots of each key page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from playwright.async_api import expect

from ..support.mlflow_access import workspace
from .lab import SPAWN_TIMEOUT, run_in_new_notebook, sso_login

pytestmark = pytest.mark.browser

ENV_KEYS = ["MLPLATFORM_TEAM", "MLPLATFORM_PROFILE", "MLPLATFORM_GPU_COUNT", "CUDA_VISIBLE_DEVICES",
            "MLFLOW_TRACKING_URI"]
# One cell: log a metric to the platform's MLflow, print the run id and the env contract between markers.
CELL = (
    "import os, mlflow\n"
    "with mlflow.start_run() as run:\n"
    '    mlflow.log_metric("accuracy", 0.93)\n'
    f"keys = {ENV_KEYS!r}\n"
    'print("RESULT<", run.info.run_id, *(os.environ.get(k, "") for k in keys), ">END", sep="|")\n'
)
RESULT = re.compile(r"RESULT<\|(.*)\|>END")


async def test_alice_spawns_gpu_server_and_logs_to_mlflow(page, shot, platform, hub):
    api = hub.login("alice")  # a second session for the hub API; `hub` stops her server at teardown too

    await sso_login(page, "alice", shot)
    await page.wait_for_url(re.compile(r"/hub/spawn"))
    await page.wait_for_selector("#spawn_form input[name=profile]")
    await shot("spawn_form")

    profiles = await page.eval_on_selector_all("#spawn_form input[name=profile]", "els => els.map(e => e.value)")
    assert sorted(profiles) == ["team-vision/cpu", "team-vision/gpu-a100", "team-vision/gpu-t4"]
    gpu_select = page.locator('select[name="gpu--team-vision--gpu-a100"]')
    two = gpu_select.locator('option[value="a100:2"]')
    assert re.fullmatch(r"A100 ×2 — \d+ of \d+ team-vision A100 free", (await two.inner_text()).strip())
    assert await two.is_enabled()

    await page.click("label[for=profile-item-team-vision--gpu-a100]")
    await gpu_select.select_option("a100:2")
    await expect(page.locator("#profile-item-team-vision--gpu-a100")).to_be_checked()
    await shot("spawn_form_gpu_a100_x2")
    await page.click("#spawn_form button[type=submit]")

    await page.wait_for_url(re.compile(r"/user/alice/lab"), timeout=SPAWN_TIMEOUT)
    await page.wait_for_selector(".jp-LauncherCard", timeout=SPAWN_TIMEOUT)
    await shot("lab_launcher")

    output = await run_in_new_notebook(page, CELL)
    await shot("notebook_cell_output")
    match = RESULT.search(output)
    assert match, f"no result line in the cell output:\n{output}"
    run_id, team, profile, gpu_count, devices, tracking_uri = match.group(1).split("|")
    assert (team, profile, gpu_count) == ("team-vision", "gpu-a100", "2")
    assert re.fullmatch(r"\d+,\d+", devices) and len(set(devices.split(","))) == 2, devices
    assert tracking_uri == platform.mlflow_url

    # The metric is in the real tracking server, not just printed.
    with workspace("team-vision"):
        run = MlflowClient(platform.mlflow_url).get_run(run_id)
    assert run.data.metrics == {"accuracy": 0.93}

    # The hub reports the same server; stopping it frees the team's quota for the other tests.
    server = api.model()["servers"][""]
    assert server["ready"] and server["user_options"]["profile"] == "gpu-a100"
    api.stop()


async def test_dana_sees_both_teams(page, shot):
    await sso_login(page, "dana")
    await page.wait_for_url(re.compile(r"/hub/spawn"))
    await page.wait_for_selector("#spawn_form input[name=profile]")
    await shot("spawn_form_two_teams")

    for team in ("team-vision", "team-nlp"):
        fieldset = page.locator(f"fieldset.team[data-team={team}]")
        await expect(fieldset).to_be_visible()
        await expect(fieldset.locator("legend")).to_contain_text(team)
        values = await fieldset.locator("input[name=profile]").evaluate_all("els => els.map(e => e.value)")
        assert sorted(values) == [f"{team}/cpu", f"{team}/gpu-a100", f"{team}/gpu-t4"]


async def test_outsider_gets_403_naming_allowed_groups(page, shot):
    await sso_login(page, "eve")
    await shot("outsider_403")
    body = page.locator("body")
    await expect(body).to_contain_text("403")
    text = await body.inner_text()
    assert "Allowed groups: team-vision, team-nlp" in text, text
    # Refused, not half in: no spawn form, no hub cookie that opens the home page (the hub sends her through
    # the provider again, whose session is alive, and refuses her again).
    assert await page.locator("#spawn_form").count() == 0
    await page.goto("/hub/home")
    await expect(page.locator("body")).to_contain_text("Allowed groups: team-vision, team-nlp")
    assert "/hub/home" not in page.url


async def test_logout_ends_sso_session(page, shot):
    await sso_login(page, "alice")
    await page.wait_for_url(re.compile(r"/hub/spawn"))

    await page.goto("/hub/logout")
    # The hub sends the browser to the realm's logout, which returns to the hub's login page, which (auto_login)
    # goes to the provider: with the SSO session still alive it would log her straight back in; it must ask again.
    await expect(page.locator("#kc-form-login input[name=username]")).to_be_visible()
    assert "/realms/platform/" in page.url
    await shot("login_form_after_logout")
