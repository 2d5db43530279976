"""Safe rollout through the platform service, end to end on the local platform (issue 12): alice's notebook
serves @champion on the platform's Ray head. With the Rollout widget, driven as she would in her notebook,
she starts the candidate in shadow and watches the live panel fill, moves it to canary 50 %; the candidate is
40× slower on a rare input and the service's controller puts the traffic back on the champion by itself
(audited as the platform; the widget shows the reason); a promotion is refused while the gates wait; abort.
Through the Python API, in shadow on ordinary traffic the live gates pass and the promotion moves @champion
and the endpoint to the candidate (the drift report kept in its run). Another team's member is refused.

The browser test (JupyterLab in headless Chromium: alice runs `Rollout()`, sees the live panel fill, clicks
Abort) is here rather than in tests/browser so that it uses this module's endpoint: an endpoint of its own
costs a Ray head start, a deploy and a candidate start (about 70 s here).
"""

from __future__ import annotations

import html
import os
import re
import time

import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient
from playwright.async_api import expect

from mlplatform import registry, serving
from mlplatform.registry.reference import log_reference_data
from mlplatform.serving import rollouts
from mlplatform.widgets import Rollout

from ..browser.lab import SPAWN_TIMEOUT, run_in_new_notebook
from ..support.authz import authorization_matrix
from ..support.browser import browser, page, shot  # noqa: F401  (fixtures of the browser test below)
from ..support.hub import PASSWORDS, HubClient
from ..support.mlflow_access import s3_admin, workspace
from ..support.mlflow_models import register_model, unique_name
from ..support.ray_head import fresh_ray_head
from .test_rollout_local import register_candidate

TEAM = "team-vision"
CARD = {"version_tags": {"intended_use": "rollout tests"}, "model_tags": {"owner": TEAM}}
ROLLBACK_WITHIN = 120  # seconds: "rollback triggers within two minutes of SLO breach"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture(scope="module")
def alice(platform):
    """alice's running server for the module (the endpoint outlives each test)."""
    hub = HubClient(platform)
    _, env = hub.start_server("alice")
    yield env
    hub.stop_all()


@pytest.fixture(scope="module")
def endpoint(platform, alice, tmp_path_factory):
    """@champion (version 1) served by alice's notebook on the platform's Ray head; version 2, the slow-on-rare
    candidate, registered with its metrics, card fields and reference data."""
    name = unique_name("roll")
    with workspace(TEAM), s3_admin(platform):
        register_model(platform.mlflow_url, name, metrics={"accuracy": 0.95}, experiment=TEAM, **CARD)
        version = register_candidate(platform.mlflow_url, name, tmp_path_factory.mktemp("candidate"), experiment=TEAM)
        client = MlflowClient(platform.mlflow_url)
        mv = client.get_model_version(name, version)
        client.log_metric(mv.run_id, "accuracy", 0.96)
        client.set_model_version_tag(name, version, "intended_use", "rollout tests")
        log_reference_data(ordinary_rows(2000, seed=1), run_id=mv.run_id, client=client)
    server = {k: v for k, v in alice.items() if k.startswith(("MLPLATFORM_", "MLFLOW_", "AWS_", "JUPYTERHUB_"))}
    saved = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)  # alice's notebook holds her own MLflow identity only
    os.environ.update(server)
    app = f"ro-{name.rsplit('-', 1)[1]}"
    try:
        with fresh_ray_head(platform.ports.ray, root=platform.ray_dir):
            registry.promote(name, 1)
            status = serving.deploy(app, f"models:/{name}@champion", cpus=0.5, wait=True, timeout=240)
            assert status["state"] == "running", status
            yield {"app": app, "name": name, "candidate": version, "url": status["predict_url"], "env": alice}
    finally:
        os.environ.clear()
        os.environ.update(saved)


def ordinary_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(0.5, 0.3, n), "x2": rng.normal(0.5, 0.3, n)})


def send(url: str, requests_: int, *, rare_every: int = 0, seed: int = 0) -> None:
    """`requests_` requests of two ordinary rows each; every `rare_every`-th one has the rare input."""
    rows = ordinary_rows(2 * requests_, seed)
    with requests.Session() as http:
        for i in range(requests_):
            body = rows.iloc[2 * i:2 * i + 2].to_dict(orient="records")
            if rare_every and i % rare_every == 0:
                body[0]["x1"] = 6.0
            r = http.post(url, json=body, timeout=30)
            assert r.status_code == 200, r.text


def shadow_traffic(app: str, url: str, total: int, *, seed: int) -> dict:
    """Ordinary requests until the live report counts `total` candidate answers; the report. The ones missing after
    15 s are sent again: a candidate the gateway found down for a moment (a busy machine) got no mirrors."""
    deadline = time.monotonic() + 120
    while (report := rollouts.report(app))["live"]["candidate"]["requests"] < total:
        assert time.monotonic() < deadline, (report["status"]["rollout"], report["live"]["candidate"])
        send(url, total - report["live"]["candidate"]["requests"], seed=seed)
        seed, settled = seed + 1, time.monotonic() + 15
        while rollouts.report(app)["live"]["candidate"]["requests"] < total and time.monotonic() < settled:
            time.sleep(1)
    return report["live"]


def audit(hub, platform, **filters) -> list[dict]:
    token = hub.login("admin").new_token()
    r = requests.get(f"http://127.0.0.1:{platform.ports.service}/services/mlplatform/api/audit", params=filters,
                     headers={"Authorization": f"token {token}"}, timeout=30)
    r.raise_for_status()
    return r.json()["records"]


def until(predicate, timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what() if callable(what) else what}"
        time.sleep(0.2)


def test_the_widget_starts_watches_and_aborts_and_the_platform_rolls_a_slow_canary_back(endpoint, hub, platform):
    app, candidate = endpoint["app"], endpoint["candidate"]

    missing = Rollout("no-such-endpoint", poll_interval=0.5)
    try:
        assert missing.wait(60)
        assert missing.errors.lines[0].startswith("endpoint: 'no-such-endpoint' is not an endpoint of the team"), \
            missing.errors.lines
        assert app in missing.errors.lines[0]
    finally:
        missing.close()

    widget = Rollout(poll_interval=0.5)
    try:
        assert widget.wait(60) and widget.errors.lines == []
        widget.endpoint.value = app
        assert widget.wait(60) and widget.errors.lines == [], widget.errors.lines
        # One model: the candidates are the model's other versions; only Start is possible.
        assert widget.mode == "" and "answers every request (one model" in widget.endpoint_line.value
        assert [v for _, v in widget.version.options] == [candidate] and widget.version.value == candidate
        assert not widget.start_button.disabled
        assert widget.apply_button.disabled and widget.promote_button.disabled and widget.abort_button.disabled

        # Start in shadow: the live panel fills from the inference log, polled every 0.5 s.
        widget.mode_choice.value = "shadow"
        widget.start_button.click()
        assert widget.wait(60) and widget.errors.lines == [], widget.errors.lines
        assert widget.mode == "shadow" and "started beside the champion in shadow" in widget.result.value
        assert widget.start_button.disabled and not widget.abort_button.disabled
        assert f"candidate version {candidate}" in widget.endpoint_line.value
        assert "mlp-gate-waiting" in widget.gates.value  # no answers yet: min_requests waits (…)
        assert serving.wait_until_settled(app, timeout=240, interval=0.3)["state"] == "running"
        send(endpoint["url"], 30, seed=3)
        until(lambda: (widget.live or {}).get("candidate", {}).get("requests", 0) >= 30, 60,
              lambda: widget.live and widget.live["candidate"])
        sides = widget.sides.value
        assert f">{candidate}<" in sides and ">1<" in sides and "Agreement:" in sides and "Drift:" in sides
        assert "mirrored requests answered alike" in sides
        assert widget.gates.value.count("class='mlp-gate ") == len(widget.live["gates"]) >= 4
        assert widget.wait_for_reports(2, timeout=30)  # the charts draw a line per side over the polls
        assert widget.charts.value.count("<svg") == 2 and "mlp-series-candidate" in widget.charts.value
        assert "<polyline" in widget.charts.value and len(widget.history) >= 2
        assert widget.rollback.value == ""

        # Canary 50 %, applied in place; the slow-on-rare candidate breaches its p99 bound and the platform
        # moves the traffic back to the champion by itself: the widget shows why, prominently.
        widget.mode_choice.value = "canary"
        widget.share.value = 50
        widget.apply_button.click()
        assert widget.wait(60) and widget.errors.lines == [], widget.errors.lines
        assert widget.mode == "canary" and "50 % of the callers" in widget.endpoint_line.value
        send(endpoint["url"], 120, rare_every=5)
        until(lambda: widget.mode == "off", ROLLBACK_WITHIN, lambda: widget.endpoint_line.value)
        reason = widget.rollback_reason
        assert "candidate p99" in reason and "the champion's" in reason
        assert reason == widget.status["rollout"]["rollout"]["reason"]
        assert "Traffic rolled back to the champion" in widget.rollback.value
        assert html.escape(reason) in widget.rollback.value and "rolled back" in widget.endpoint_line.value
        sides = {requests.post(endpoint["url"], json=[{"x1": 0.1, "x2": 1.0}], timeout=30).headers["X-Rollout-Side"]
                 for _ in range(20)}
        assert sides == {"champion"}
        [record] = audit(hub, platform, action="rollback", target=f"model:{TEAM}/{app}")
        assert (record["actor"], record["outcome"], record["details"]["automatic"]) == ("platform", "succeeded", True)
        assert record["details"]["reason"] == reason and record["details"]["from_mode"] == "canary"

        # The inference log may go off now that the candidate gets nothing (in place, audited); shadow is then refused
        # until it is on again, with the settings it had.
        assert rollouts.inference_log(app, enabled=False)["rollout"]["inference_log"] is None
        with pytest.raises(serving.ServingConflict, match="the inference log of .* is off"):
            rollouts.change(app, "shadow")
        assert rollouts.inference_log(app, enabled=True)["rollout"]["inference_log"]["sample_rate"] == 1.0
        switched = [r["details"]["enabled"] for r in audit(hub, platform, action="rollout",
                                                           target=f"model:{TEAM}/{app}")
                    if r["details"].get("change") == "inference_log"]
        assert switched == [False, True]

        # Shadow again (a fresh window): Promote is refused while the live gates wait, shown as red lines.
        widget.mode_choice.value = "shadow"
        widget.apply_button.click()
        assert widget.wait(60) and widget.errors.lines == [] and widget.mode == "shadow"
        assert widget.rollback.value == ""
        widget.promote_button.click()
        assert widget.wait(130)
        lines = widget.errors.lines
        assert lines[0].startswith(f"not promoted: version {candidate} of {endpoint['name']} stays a candidate"), lines
        assert any(line.startswith("… waiting: live min_requests:") for line in lines), lines
        assert widget.mode == "shadow"

        # Abort: the candidate goes, the champion answers everything; the live panel empties.
        widget.abort_button.click()
        assert widget.wait(60) and widget.errors.lines == [], widget.errors.lines
        assert widget.mode == "" and widget.status["rollout"] is None
        assert "rollout ended" in widget.result.value and "one model, no rollout" in widget.endpoint_line.value
        assert widget.sides.value == widget.gates.value == widget.charts.value == ""
        assert not widget.start_button.disabled and widget.abort_button.disabled
        until(lambda: widget.status["state"] == "running", 120, lambda: widget.endpoint_line.value)  # polled
        answers = {requests.post(endpoint["url"], json=[{"x1": 0.1, "x2": 1.0}], timeout=30).headers["X-Model-Version"]
                   for _ in range(10)}
        assert answers == {"1"}
    finally:
        widget.close()
    assert not widget.polls.running() and not widget.tasks.running()


BROWSER_CELL = "from mlplatform.widgets import Rollout\nwidget = Rollout(poll_interval=1)\nwidget\n"


@pytest.fixture
def in_shadow(endpoint):
    """The endpoint with its candidate in shadow, running, and some traffic in its inference log."""
    status = rollouts.start(endpoint["app"], endpoint["candidate"], mode="shadow")
    assert status["rollout"]["model_version"] == endpoint["candidate"]
    assert serving.wait_until_settled(endpoint["app"], timeout=240, interval=0.3)["state"] == "running"
    # Fewer answers than the catalog's min_requests_for_rollback (20): the controller (the test above) leaves this
    # healthy candidate alone while the browser, starting JupyterLab on the same two cores, slows either side.
    send(endpoint["url"], 10, seed=5)
    yield endpoint
    if serving.status(endpoint["app"]).get("rollout"):  # the test failed before Abort
        rollouts.abort(endpoint["app"])


async def login_with_a_running_server(page, platform, user: str) -> None:  # noqa: F811
    """lab.sso_login's steps for a user whose server runs already: the hub's callback sends the browser
    straight to the server (/user/<name>/...), not to a /hub/ page."""
    await page.goto("/hub/login")
    await page.wait_for_selector("#kc-form-login input[name=username]")
    await page.fill("#kc-form-login input[name=username]", user)
    await page.fill("#kc-form-login input[name=password]", PASSWORDS[user])
    await page.click("#kc-login")
    await page.wait_for_url(re.compile(rf"^{re.escape(platform.hub_url)}/(hub|user)/"))
    await page.wait_for_load_state()


@pytest.mark.browser
async def test_rollout_widget_shows_the_live_panel_and_aborts_in_the_browser(page, shot, platform,  # noqa: F811
                                                                             in_shadow):
    app, name, candidate = in_shadow["app"], in_shadow["name"], in_shadow["candidate"]
    await login_with_a_running_server(page, platform, "alice")
    await page.goto("/user/alice/lab?reset")  # the launcher, whatever her workspace had open
    await page.wait_for_selector(".jp-LauncherCard", timeout=SPAWN_TIMEOUT)
    await run_in_new_notebook(page, BROWSER_CELL)
    widget = page.locator(".mlp-rollout")
    await expect(widget).to_be_visible(timeout=60_000)

    await widget.locator(".mlp-endpoint select").select_option(label=f"{app} — {name}", timeout=60_000)
    status = widget.locator(".mlp-rollout-status")
    await expect(status).to_contain_text(f"candidate version {candidate}", timeout=60_000)
    await expect(status).to_contain_text("shadow")
    await expect(widget.locator(".mlp-mirror")).to_be_visible()  # shadow's mirrored share, settable for Apply

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


def test_in_shadow_the_live_gates_pass_and_promotion_moves_champion_and_traffic(endpoint, hub, platform, authz):
    app, name = endpoint["app"], endpoint["name"]
    status = rollouts.start(app, endpoint["candidate"], mode="shadow")
    assert (status["rollout"]["model_version"], status["rollout"]["rollout"]["mode"]) == (endpoint["candidate"], "shadow")
    serving.wait_until_settled(app, timeout=240, interval=0.3)
    # The team's member sets the inference log's sample rate (the same as before: every request logged); off is
    # refused while the live gates read it.
    url = f"{endpoint['env']['MLPLATFORM_SERVICE_URL']}/api/rollouts/{TEAM}/{app}/inference-log"
    alice = {"Authorization": f"token {endpoint['env']['JUPYTERHUB_API_TOKEN']}"}
    authz.check("alice's server (team-vision)", "switch a rollout's inference log",
                requests.put(url, json={"sample_rate": 1}, headers=alice, timeout=60), allowed=True)
    off = requests.put(url, json={"enabled": False}, headers=alice, timeout=60)
    assert off.status_code == 409 and off.json()["message"].startswith(f"enabled: false refused: {app!r} is in shadow")
    bad = requests.put(url, json={"sample_rate": 2}, headers=alice, timeout=60)
    assert (bad.status_code, bad.json()["problems"][0]["field"]) == (400, "sample_rate")
    with pytest.raises(registry.PromotionRefused) as refused:
        rollouts.promote(app)
    waiting = {g["id"] for g in refused.value.report["gates"] if not g["passed"]}
    assert "live min_requests" in waiting, refused.value.report["gates"]

    live = shadow_traffic(app, endpoint["url"], 260, seed=7)  # ordinary traffic, the reference's distribution
    assert live["promotable"], [g for g in live["gates"] if not g["passed"]]
    # The candidate's rule (x1 > 0.5) is not the champion's regression: agreement is shown, not a gate.
    assert live["agreement"]["pairs"] >= 260 and 0 < live["agreement"]["share"] < 1
    assert live["drift"]["status"] == "pass" and live["drift"]["score"] <= 0.2
    done = rollouts.promote(app)
    assert (done["version"], done["status"]["model_version"], done["status"]["rollout"]) == (
        endpoint["candidate"], endpoint["candidate"], None)
    with workspace(TEAM), s3_admin(platform):
        client = MlflowClient(platform.mlflow_url)
        assert client.get_registered_model(name).aliases["champion"] == endpoint["candidate"]
        # The drift report the promotion passed, kept in the candidate's run by the service's S3 identity.
        run_id = client.get_model_version(name, endpoint["candidate"]).run_id
        assert done["drift_report"] == {"run_id": run_id, "html": "drift/report.html", "json": "drift/report.json"}
        assert {a.path for a in client.list_artifacts(run_id, "drift")} == {"drift/report.html", "drift/report.json"}
    status = serving.wait_until_settled(app, timeout=240, interval=0.3)
    r = requests.post(endpoint["url"], json=[{"x1": 0.1, "x2": 1.0}], timeout=30)
    assert (status["state"], r.headers["X-Model-Version"]) == ("running", endpoint["candidate"])
    changes = [(r["actor"], r["action"], r["details"].get("change"), r["outcome"])
               for r in audit(hub, platform, target=f"model:{TEAM}/{app}")]
    assert ("alice", "rollout", "start", "succeeded") in changes and ("alice", "rollout", "change", "succeeded") in changes


def test_only_the_endpoints_team_acts_on_its_rollout(endpoint, hub, platform, authz):
    _, bob = hub.start_server("bob")
    service = f"{bob['MLPLATFORM_SERVICE_URL']}/api/rollouts/{TEAM}/{endpoint['app']}"
    alice = {"Authorization": f"token {endpoint['env']['JUPYTERHUB_API_TOKEN']}"}
    authz.check("alice's server (team-vision)", "read a rollout", requests.get(service, headers=alice, timeout=60),
                allowed=True)
    headers = {"Authorization": f"token {bob['JUPYTERHUB_API_TOKEN']}"}
    for method, suffix, body, action in (("GET", "", None, "read a rollout"),
                                         ("POST", "", {"version": "1"}, "start a rollout"),
                                         ("PATCH", "", {"mode": "off"}, "change a rollout"),
                                         ("PUT", "/inference-log", {"enabled": False},
                                          "switch a rollout's inference log"),
                                         ("DELETE", "", None, "end a rollout"),
                                         ("POST", "/promote", {}, "promote a rollout")):
        r = requests.request(method, service + suffix, json=body, headers=headers, timeout=60)
        authz.check("bob's server (team-nlp)", action, r, allowed=False)
        assert "the endpoint belongs to team team-vision" in r.json()["message"], r.json()
    authz.check("no token", "read a rollout", requests.get(service, timeout=30), allowed=False)
    refused = [(r["details"]["change"], r["outcome"]) for r in audit(hub, platform, actor="bob", action="rollout")
               if r["target"] == f"model:{TEAM}/{endpoint['app']}"]
    assert refused == [("start", "refused"), ("change", "refused"), ("inference_log", "refused"), ("abort", "refused"),
                       ("promote", "refused")]
