"""ServeModel in a real JupyterLab: SSO login → a CPU server → a cell showing the widget → choose the
registered model → Deploy → "running" → Send test request → the prediction in the widget; then the
endpoint the widget shows answers an HTTP client of the test, and Delete removes it.

The local catalog is in GitOps mode: the widget shows the commit of the deploy and of the delete, and the
platform's Git server holds them (read from its bare repository with git).

The notebook's kernel starts the platform's Ray head (MLPLATFORM_RAY_PORT, set by the platform for every
server); the test stops it at the end and checks that no Ray process is left.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import requests
from mlflow import MlflowClient
from playwright.async_api import expect


from ..support import mlflow_models
from ..support.mlflow_access import provision, s3_admin, workspace
from ..support.mlflow_models import SAMPLE_ROWS, unique_name
from ..support.ray_head import fresh_ray_head
from .lab import run_in_new_notebook, spawn, sso_login

pytestmark = pytest.mark.browser

CELL = "from mlplatform.widgets import ServeModel\nwidget = ServeModel(poll_interval=0.5)\nwidget\n"
DEPLOY_TIMEOUT = 400_000  # ms: the Ray head starts first, then a replica loads the model, on 2 shared cores


def git(platform, *args: str) -> str:
    bare = platform.data_dir / "git" / "platform" / "gitops.git"
    return subprocess.run(["git", f"--git-dir={bare}", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def ray_head(platform):
    """The platform's Ray head, absent before the test and stopped after it with no process left."""
    with fresh_ray_head(platform.ports.ray, root=platform.ray_dir) as head:
        yield head


@pytest.fixture
def model(platform):
    """A registered model of team-vision (in its MLflow workspace) with @champion → version 1."""
    provision(platform, "team-vision")
    with workspace("team-vision"), s3_admin(platform):
        v1 = mlflow_models.register_model(platform.mlflow_url, unique_name("iris"), experiment="team-vision")
        MlflowClient(platform.mlflow_url).set_registered_model_alias(v1.name, "champion", v1.version)
    return v1


async def test_serve_widget_deploys_and_answers_in_the_browser(page, shot, platform, hub, ray_head, model):
    hub.login("alice")  # so the `hub` fixture stops her server at teardown
    await sso_login(page, "alice")
    await spawn(page, "team-vision--cpu")
    await run_in_new_notebook(page, CELL)
    widget = page.locator(".mlp-serve-model")
    await expect(widget).to_be_visible(timeout=60_000)

    # The dropdown lists MLflow's registered models; the name follows the model (a DNS label).
    app = f"iris-{model.name.rsplit('-', 1)[1]}"
    await widget.locator(".mlp-model select").select_option(label=model.name, timeout=60_000)  # once listed
    await expect(widget.locator(".mlp-version select")).to_have_value(re.compile("champion"))
    await expect(widget.locator(".mlp-name input")).to_have_value(app)
    await expect(widget.locator("button.mlp-deploy")).to_be_enabled()
    await shot("serve_widget_form")

    await widget.locator("button.mlp-deploy").click()
    status = widget.locator(".mlp-status")
    await expect(status).to_contain_text(re.compile("submitted|starting|deploying"), timeout=60_000)
    await shot("serve_widget_deploying")
    await expect(status).to_contain_text("running", timeout=DEPLOY_TIMEOUT)
    await expect(widget.locator(".mlp-errors")).to_have_text("")
    # GitOps: the deploy is a commit of the RayService, by alice, on the platform's Git server.
    path = f"teams/team-vision/serving/{app}.yaml"
    commit = widget.locator(".mlp-commit")
    await expect(commit).to_contain_text(re.compile(rf"^Git: commit [0-9a-f]{{7}} on main \({re.escape(path)}\) — "
                                                    rf"Deploy RayService team-vision/{app}$"))
    sha = git(platform, "log", "-1", "--format=%H|%an", "main", "--", path).strip()
    assert sha.endswith("|alice") and sha[:7] in await commit.inner_text()
    await shot("serve_widget_commit")
    url = await widget.locator(".mlp-endpoint a").get_attribute("href")
    assert url == f"http://127.0.0.1:{platform.ports.ray + 2}/{app}"

    # The test request is prefilled from the model's signature; send the sample rows instead.
    request = widget.locator(".mlp-request textarea")
    await expect(request).to_have_value('[{"x1": 0.0, "x2": 0.0}]', timeout=60_000)
    await request.fill(json.dumps(SAMPLE_ROWS))
    await widget.locator("button.mlp-send").click()
    await expect(widget.locator(".mlp-answer")).to_contain_text("[0, 1]", timeout=60_000)
    await shot("serve_widget_prediction")

    # The endpoint the widget shows answers any HTTP client.
    r = requests.post(f"{url}/predict", json=SAMPLE_ROWS, timeout=30)
    assert r.status_code == 200 and r.json() == {"predictions": [0, 1]}
    assert r.headers["X-Model-Version"] == model.version

    await widget.locator("button.mlp-delete").click()
    await expect(status).to_contain_text("deleted", timeout=120_000)
    await expect(widget.locator("button.mlp-send")).to_be_disabled()
    await expect(commit).to_contain_text(f"Delete RayService team-vision/{app}")
    assert path not in git(platform, "ls-tree", "-r", "--name-only", "main").split()
    assert requests.post(f"{url}/predict", json=SAMPLE_ROWS, timeout=30).status_code == 404
    await shot("serve_widget_deleted")
