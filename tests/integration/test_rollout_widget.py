"""The Rollout widget against the real local platform (issue 12), driven as alice would in her notebook:
choose the endpoint and the candidate, Start in shadow, watch the live panel fill (both sides, gates, charts),
Apply canary 50 %, watch the platform roll the slow-on-rare candidate back by itself (the widget shows the
reason), Apply shadow again, Promote refused while the gates wait (red lines naming them), Abort: one model.

The endpoint is test_rollouts_service's fixture: @champion (version 1) served by alice's notebook on the
platform's Ray head, version 2 the candidate that is 40× slower on a rare input.
"""

from __future__ import annotations

import html
import time

import pytest
import requests

from mlplatform import serving
from mlplatform.widgets import Rollout

from .test_rollouts_service import ROLLBACK_WITHIN, send
from .test_rollouts_service import alice, endpoint  # noqa: F401  (the module's fixtures, shared)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def until(predicate, timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what() if callable(what) else what}"
        time.sleep(0.2)


def test_rollout_widget_start_watch_canary_rolled_back_refused_abort(endpoint):  # noqa: F811
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
        assert "candidate p99" in reason and reason == widget.status["rollout"]["rollout"]["reason"]
        assert "Traffic rolled back to the champion" in widget.rollback.value
        assert html.escape(reason) in widget.rollback.value and "rolled back" in widget.endpoint_line.value

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
