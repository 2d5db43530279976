"""Rollout: try a new version of a served model beside its champion (shadow → canary → champion), live.

    from mlplatform.widgets import Rollout
    Rollout()            # choose the endpoint and the candidate version, Start (shadow, the share of requests
                         # mirrored: Mirrored %); watch; Apply canary 10 %; Promote once every gate shows ✔, or Abort
    Rollout("iris")      # the same, the endpoint chosen

Every action calls `mlplatform.serving.rollouts` (the platform service) in a background thread. While the
endpoint has a rollout, its live report is read every `poll_interval` seconds and shown: both sides side by
side (version, requests, rate, p50, p99, error rate), agreement, drift, each gate (✔ passed, ✘ failed,
… waiting for data), and two small charts of the last polls (p99 and request rate per side). When the
platform moved the traffic back to the champion by itself (the candidate breached the SLO), a red banner
says why; Apply shadow or canary to try again on a fresh window, or Abort. In GitOps mode (Kubernetes with the
catalog's `gitops`) each step is a commit by the platform service: the widget shows the last one, linked.

The widget decides nothing: the service checks every input, refuses another team, refuses a promotion while
a gate fails or waits (its gates shown as red lines), and rolls back with the notebook closed.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from datetime import datetime

import ipywidgets as w
from traitlets import Unicode

from .. import registry, serving
from ..serving import rollouts
from ..serving.backend import SETTLED_STATES
from ..serving.spec import MODEL_URI
from .common import (
    ERROR_COLOR,
    LABEL,
    OK_COLOR,
    WIDE,
    Background,
    CommitLine,
    ErrorLines,
    close_tree,
    lines_html,
    on_click,
    set_options,
    version_label,
)

CELL = 'style="padding:2px 10px;text-align:left;vertical-align:top"'
NUM = 'style="padding:2px 10px;text-align:right"'
FIT = {"width": "auto"}
ACTIONS = ("start", "apply", "promote", "abort")
WAIT_COLOR = "#757575"
SIDE_COLORS = {"champion": "#1565c0", "candidate": "#ef6c00"}
# Each gate as the panel marks it: passed, failed, waiting for data.
MARKS = {True: ("✔", OK_COLOR), False: ("✘", ERROR_COLOR), None: ("…", WAIT_COLOR)}


class Rollout(w.VBox):
    """Safe rollout of an endpoint of the team as a form and a live panel. `endpoint`: the one chosen at first
    (default: the first listed); `client`: the MlflowClient the candidate versions are listed from (default:
    MLFLOW_TRACKING_URI's); `poll_interval`: seconds between live reports while a rollout runs; `history`:
    how many polls the charts keep. `close()` stops the polls (the rollout goes on: the platform owns it)."""

    mode = Unicode("", help="the rollout's mode as last read: shadow, canary, off (rolled back); '' without one")

    def __init__(self, endpoint: str | None = None, *, client=None, poll_interval: float = 2.0, history: int = 60,
                 **kwargs):
        self._client = client
        self.poll_interval = poll_interval
        self.status: dict | None = None  # the chosen endpoint's status as last read (status["rollout"]: its rollout)
        self.live: dict | None = None  # its live report as last read (None without a rollout)
        self.history: deque[dict] = deque(maxlen=history)  # one point per report read: the charts' data
        self.reports = 0  # reports read for the chosen endpoint (polls and actions)
        self._wanted = endpoint
        # One report shown at a time (an action's and a poll's may cross), and the candidate choices replaced by
        # one thread at a time: a read lists them while the browser's choice of another endpoint empties them.
        self._lock = threading.RLock()
        self._synced: tuple | None = None  # the rollout the mode and share fields were last set from
        self.tasks = Background(self._show_error, self._update_buttons)  # actions and reads: wait() waits for them
        self.polls = Background(self._show_error)  # the live poll, running as long as the rollout: wait() does not

        self.endpoint = w.Dropdown(description="Endpoint", layout=WIDE, style=LABEL)
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=w.Layout(**FIT))
        self.endpoint_line = w.HTML()
        self.version = w.Dropdown(description="Candidate version", layout=WIDE, style=LABEL)
        self.versions_note = w.HTML()
        self.mode_choice = w.ToggleButtons(options=[("shadow", "shadow"), ("canary", "canary")], value="shadow",
                                           description="Mode", style={**LABEL, "button_width": "7em"},
                                           tooltips=["every request mirrored to the candidate; callers get the "
                                                     "champion's answers", "the share of callers answered by the "
                                                                           "candidate"])
        self.share = w.IntSlider(value=10, min=1, max=100, step=1, description="Canary share %", style=LABEL,
                                 layout=w.Layout(width="32em"), continuous_update=False)
        # Shadow's sample of the requests sent on to the candidate (the rollout's mirror_rate): less load on it.
        self.mirror = w.IntSlider(value=100, min=1, max=100, step=1, description="Mirrored %", style=LABEL,
                                  layout=w.Layout(width="32em"), continuous_update=False,
                                  tooltip="the share of the requests shadow also sends to the candidate")
        self.commit_line = CommitLine()  # GitOps mode: the rollout's last commit
        self.start_button = w.Button(description="Start", icon="play", button_style="primary", disabled=True,
                                     layout=w.Layout(**FIT))
        self.apply_button = w.Button(description="Apply", icon="sliders", button_style="info", disabled=True,
                                     layout=w.Layout(**FIT), tooltip="change the mode or share in place")
        self.promote_button = w.Button(description="Promote", icon="arrow-up", button_style="success", disabled=True,
                                       layout=w.Layout(**FIT), tooltip="the candidate becomes @champion; the service "
                                                                       "refuses while a gate fails or waits")
        self.abort_button = w.Button(description="Abort", icon="times", button_style="danger", disabled=True,
                                     layout=w.Layout(**FIT), tooltip="the candidate goes; the champion answers all")
        self.errors = ErrorLines()
        self.result = w.HTML()
        self.rollback = w.HTML()  # the platform's rollback and its reason, prominent
        self.sides = w.HTML()
        self.gates = w.HTML()
        self.charts = w.HTML()
        self.live_panel = w.VBox([self.rollback, self.sides, self.gates, self.charts])
        for widget, css in ((self.endpoint, "mlp-endpoint"), (self.version, "mlp-version"),
                            (self.mode_choice, "mlp-mode"), (self.share, "mlp-share"), (self.mirror, "mlp-mirror"),
                            (self.endpoint_line, "mlp-rollout-status"), (self.start_button, "mlp-start"),
                            (self.apply_button, "mlp-apply"), (self.promote_button, "mlp-promote"),
                            (self.abort_button, "mlp-abort"), (self.errors, "mlp-errors"), (self.result, "mlp-result"),
                            (self.rollback, "mlp-rollback-reason"), (self.sides, "mlp-sides"),
                            (self.gates, "mlp-gates"), (self.charts, "mlp-charts"), (self.live_panel, "mlp-live")):
            widget.add_class(css)
        super().__init__([
            w.HTML("<b>Roll out a model version</b> — shadow → canary → champion, behind the platform's live gates"),
            w.HBox([self.endpoint, self.refresh_button]), self.endpoint_line, self.commit_line, self.version,
            self.versions_note, self.mode_choice, self.share, self.mirror,
            w.HBox([self.start_button, self.apply_button, self.promote_button, self.abort_button]),
            self.errors, self.result, self.live_panel,
        ], **kwargs)
        self.add_class("mlp-rollout")

        self.endpoint.observe(self._on_endpoint, names="value")
        self.version.observe(lambda change: self._update_buttons(), names="value")
        self.mode_choice.observe(self._show_share, names="value")
        on_click(self.refresh_button, self.refresh)
        on_click(self.start_button, self._on_start)
        on_click(self.apply_button, self._on_apply)
        on_click(self.promote_button, lambda: self._act("promote", self._promote))
        on_click(self.abort_button, lambda: self._act("abort", self._abort))
        self._show_share()
        self.refresh()

    # --- choosing ------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the served endpoints again, and read the chosen one's rollout (in the background)."""
        self.tasks.start("endpoints", self._load_endpoints)

    def _load_endpoints(self) -> None:
        listed = sorted(serving.deployments(), key=lambda s: s.get("name", ""))
        options = [(f"{s['name']} — {_model_name(s) or s.get('model_uri', '')}", s["name"])
                   for s in listed if s.get("name") and s.get("state") not in ("deleting", "deleted")]
        wanted, self._wanted = self._wanted, None
        previous = self.endpoint.value
        set_options(self.endpoint, options)
        if wanted is not None:
            if wanted not in [value for _, value in options]:
                self.errors.show([f"endpoint: {wanted!r} is not an endpoint of the team; served: "
                                  f"{', '.join(v for _, v in options) or 'none (deploy one with ServeModel)'}"])
            else:
                self.endpoint.value = wanted
        if not options:
            self.endpoint_line.value = "<i>No served endpoint yet: deploy a model with ServeModel, then Refresh.</i>"
        elif self.endpoint.value and self.endpoint.value == previous:  # the same endpoint: no change event, read it again here
            self._read(self.endpoint.value)

    def _on_endpoint(self, change=None) -> None:
        name = self.endpoint.value
        with self._lock:
            self.status, self.live, self.reports, self._synced = None, None, 0, None
            self.history.clear()
            set_options(self.version, [])
        self.mode = ""
        for panel in (self.endpoint_line, self.result, self.rollback, self.sides, self.gates, self.charts):
            panel.value = ""
        self.commit_line.show(None)
        self.errors.clear()
        self._update_buttons()
        if name:
            self.tasks.start("read", self._read, name, True)

    def _load_versions(self, status: dict) -> None:
        """The candidate choices: every version of the endpoint's model but the one it serves."""
        from mlflow.tracking import MlflowClient

        from ..registry.facts import all_versions

        model = _model_name(status)
        if not model:
            return
        client = self._client or MlflowClient()
        aliases = {a: str(v) for a, v in (client.get_registered_model(model).aliases or {}).items()}
        versions = sorted((str(v.version) for v in all_versions(client, model)), key=int, reverse=True)
        serving_version = str(status.get("model_version") or "")
        options = [(version_label(v, aliases), v) for v in versions if v != serving_version]
        with self._lock:
            if status.get("name") != self.endpoint.value:  # chosen another meanwhile: its own read lists its versions
                return
            set_options(self.version, options)
            self.versions_note.value = "" if options else (
                f"<i>{html.escape(model)} has no version but the one served ({serving_version}): register another, "
                "then Refresh.</i>")
        self._update_buttons()

    def _show_share(self, change=None) -> None:
        canary = self.mode_choice.value == "canary"
        self.share.layout.display = None if canary else "none"
        self.mirror.layout.display = "none" if canary else None

    # --- reading and showing -----------------------------------------------------------------------------
    def _read(self, name: str, versions: bool = False) -> dict:
        """Read the endpoint's status and live report, show them, keep polling while a rollout runs."""
        report = rollouts.report(name)
        self._show(name, report)
        if versions:
            self._load_versions(report["status"])
        return report

    def _show(self, name: str, report: dict) -> None:
        with self._lock:
            if name != self.endpoint.value:  # chosen another meanwhile: this report is not shown
                return
            status, live = report["status"], report.get("live")
            self.status, self.live = status, live
            self.reports += 1
            current = status.get("rollout")
            settings = (current or {}).get("rollout") or {}
            if live:
                self.history.append(_point(live))
            self._sync_fields(current, settings)
            self.endpoint_line.value = status_html(status)
            self.commit_line.show(report.get("commit"))
            self.rollback.value = rollback_html(current)
            self.sides.value = sides_html(live) if live else ""
            self.gates.value = live_gates_html(live) if live else ""
            self.charts.value = charts_html(list(self.history)) if live else ""
            self.mode = settings.get("mode", "") if current else ""
        self._update_buttons()
        if _watched(status) and not self.polls.running("poll") and not self.polls.stopping.is_set():
            self.polls.start("poll", self._poll, name)

    def _sync_fields(self, current: dict | None, settings: dict) -> None:
        """Mode, share and mirror rate as the rollout has them, once per rollout change (the user's edits stay
        meanwhile)."""
        key = (current or {}).get("model_version"), settings.get("mode"), settings.get("share"), \
            settings.get("mirror_rate")
        if current is None or key == self._synced:
            return
        self._synced = key
        if settings.get("mode") in ("shadow", "canary"):
            self.mode_choice.value = settings["mode"]
        if settings.get("mode") == "canary" and settings.get("share"):
            self.share.value = max(1, min(100, round(settings["share"] * 100)))
        if settings.get("mode") == "shadow" and settings.get("mirror_rate") is not None:
            self.mirror.value = max(1, min(100, round(settings["mirror_rate"] * 100)))

    def _poll(self, name: str) -> None:
        """The live report every poll_interval seconds, while `name` is chosen and has a rollout (or has not
        settled yet: after Abort or Promote, until it runs on one model again)."""
        while self.polls.sleep(self.poll_interval) and name == self.endpoint.value:
            if self.tasks.running(*ACTIONS):  # the action shows its own outcome
                continue
            try:
                report = rollouts.report(name)
            except serving.DeploymentNotFound as e:  # deleted meanwhile: nothing more to watch
                self.errors.show_error(e)
                return
            except serving.ServingError as e:  # not answered this time: say so, ask again
                self.errors.show_error(e)
                continue
            self._show(name, report)
            if not _watched(report["status"]):
                return

    @property
    def rollback_reason(self) -> str | None:
        """Why the platform moved the traffic back to the champion (mode off), as last read; None otherwise."""
        settings = ((self.status or {}).get("rollout") or {}).get("rollout") or {}
        return settings.get("reason") if settings.get("mode") == "off" else None

    def wait_for_reports(self, count: int, timeout: float = 60.0) -> bool:
        """Until `count` more reports of the chosen endpoint were read (polls included); for scripts and tests."""
        target, deadline = self.reports + count, time.monotonic() + timeout
        while self.reports < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # --- actions ---------------------------------------------------------------------------------------
    def _settings(self) -> dict:
        mode = self.mode_choice.value
        return {"mode": mode, "share": self.share.value / 100 if mode == "canary" else None,
                "mirror_rate": self.mirror.value / 100 if mode == "shadow" else 1.0}

    def _act(self, action: str, fn, *args) -> None:
        name = self.endpoint.value
        if not name:
            self.errors.show(["endpoint: none chosen; choose a served endpoint of the team (Refresh lists them)"])
            return
        self.errors.clear()
        self.result.value = ""
        self.tasks.start(action, fn, name, *args)

    def _on_start(self) -> None:
        if self.version.value is None:
            self.errors.show(["version: none chosen; choose the candidate version of the endpoint's model"])
            return
        self._act("start", self._start, self.version.value, self._settings())

    def _on_apply(self) -> None:
        self._act("apply", self._apply, self._settings())

    def _start(self, name: str, version: str, settings: dict) -> None:
        with self._lock:
            self.history.clear()
        rollouts.start(name, version, **settings)
        self._done(name, f"version {version} started beside the champion in {_mode_text(settings)}")

    def _apply(self, name: str, settings: dict) -> None:
        rollouts.change(name, **settings)
        self._done(name, f"now {_mode_text(settings)} (applied in place)")

    def _promote(self, name: str) -> None:
        done = rollouts.promote(name)
        alias = done.get("alias") or "champion"
        self._done(name, f"version {done.get('version')} of {done.get('model')} holds @{alias} and answers every "
                         "request")

    def _abort(self, name: str) -> None:
        candidate = ((self.status or {}).get("rollout") or {}).get("model_version")
        status = rollouts.abort(name)
        self._done(name, f"rollout ended: {'version ' + candidate if candidate else 'the candidate'} removed; "
                         f"version {status.get('model_version')} answers every request")

    def _done(self, name: str, message: str) -> None:
        self.result.value = lines_html([message], OK_COLOR)
        self._read(name, versions=True)  # one model again after Promote or Abort: the live panel empties

    def _show_error(self, error: BaseException) -> None:
        if isinstance(error, registry.PromotionRefused):
            self.errors.show(refused_lines(error.report, self.live))
        else:
            self.errors.show_error(error)

    def _update_buttons(self) -> None:
        busy = self.tasks.running(*ACTIONS)
        rolling = bool((self.status or {}).get("rollout"))
        chosen = bool(self.endpoint.value) and self.status is not None
        self.start_button.disabled = busy or not chosen or rolling or self.version.value is None
        self.apply_button.disabled = self.promote_button.disabled = self.abort_button.disabled = \
            busy or not chosen or not rolling

    # --- lifecycle -----------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Until the background work (listing, reading, an action and the report after it) is done; the live
        poll goes on. For scripts and tests."""
        return self.tasks.wait(timeout)

    def close(self) -> None:
        """Stop the polls and close the widget (the rollout goes on: the platform owns it)."""
        self.polls.stop()
        self.tasks.stop()
        close_tree(self)


# --- what the panel shows (pure: dicts in, HTML out) --------------------------------------------------------

def _model_name(status: dict) -> str | None:
    match = MODEL_URI.fullmatch(status.get("model_uri") or "")
    return match["name"] if match else None


def _watched(status: dict) -> bool:
    """Whether the panel keeps polling: a rollout runs, or the endpoint is still on its way."""
    return bool(status.get("rollout")) or status.get("state") not in SETTLED_STATES


def _mode_text(settings: dict) -> str:
    if settings.get("mode") == "canary":
        return f"canary, {_percent(settings.get('share'))} of the callers answered by the candidate"
    if settings.get("mode") == "shadow" and (settings.get("mirror_rate") or 0) < 1:
        return f"shadow, {_percent(settings.get('mirror_rate'))} of the requests mirrored to the candidate"
    return settings.get("mode") or "?"


def _percent(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}/s"


def _point(live: dict) -> dict:
    sides = {side: live.get(side) or {} for side in SIDE_COLORS}
    return {"time": time.time(), **{f"{side}_p99_ms": s.get("p99_ms") for side, s in sides.items()},
            **{f"{side}_rate_per_s": s.get("rate_per_s") for side, s in sides.items()}}


def status_html(status: dict) -> str:
    """One line: what the endpoint serves and what its rollout does."""
    name, model = html.escape(str(status.get("name"))), html.escape(_model_name(status) or "?")
    line = f"<b>{name}</b> ({html.escape(str(status.get('state', '')))}): {model} version " \
           f"{html.escape(str(status.get('model_version')))} is the champion"
    current = status.get("rollout")
    if not current:
        return f"{line} and answers every request (one model, no rollout)"
    settings = current.get("rollout") or {}
    since = settings.get("since")
    when = f", since {datetime.fromtimestamp(since).strftime('%H:%M:%S')}" if since else ""
    mode = settings.get("mode")
    rate = settings.get("mirror_rate", 1.0)
    doing = ("gets no traffic: rolled back" if mode == "off" else _mode_text(settings) if mode == "canary"
             else "shadow: every request mirrored to it, callers get the champion's answers" if rate >= 1
             else f"shadow: {_percent(rate)} of the requests mirrored to it, callers get the champion's answers")
    return (f"{line}; candidate version {html.escape(str(current.get('model_version')))} — {html.escape(doing)}{when}"
            f"{html.escape(_log_text(current))}")


def _log_text(current: dict) -> str:
    """The rollout's inference log, when it is not the usual (on, every request): the live gates' evidence."""
    if "inference_log" not in current:  # a service that does not say
        return ""
    settings = current["inference_log"]
    if settings is None:
        return "; inference log off (the live gates have no evidence)"
    rate = settings.get("sample_rate", 1.0)
    return "" if rate >= 1 else f"; inference log samples {_percent(rate)} of the requests"


def rollback_html(current: dict | None) -> str:
    """The platform's rollback, prominent: mode off with the reason it recorded."""
    settings = (current or {}).get("rollout") or {}
    if settings.get("mode") != "off":
        return ""
    reason = settings.get("reason") or "turned off (no reason recorded)"
    return (f'<div style="border:2px solid {ERROR_COLOR};background:#ffebee;color:{ERROR_COLOR};padding:6px 10px;'
            f'margin:4px 0"><b>⚠ Traffic rolled back to the champion</b> — {html.escape(reason)}<br>'
            "<span style='color:#333'>The candidate gets no requests. Apply shadow or canary to try again on a fresh "
            "window, or Abort.</span></div>")


def sides_html(live: dict) -> str:
    """The two sides side by side, then agreement and drift."""
    sides = [live.get("champion") or {}, live.get("candidate") or {}]
    rows = (("version", lambda s: str(s.get("model_version") or "—")), ("requests", lambda s: str(s.get("requests", 0))),
            ("rate", lambda s: _rate(s.get("rate_per_s"))), ("p50", lambda s: _ms(s.get("p50_ms"))),
            ("p99", lambda s: _ms(s.get("p99_ms"))), ("error rate", lambda s: _percent(s.get("error_rate"), 2)))
    head = "".join(f"<th {NUM}><span style='color:{color}'>{side}</span></th>" for side, color in SIDE_COLORS.items())
    body = "".join(f"<tr class='mlp-side-{label.replace(' ', '-')}'><td {CELL}>{label}</td>"
                   + "".join(f"<td {NUM}>{html.escape(fmt(s))}</td>" for s in sides) + "</tr>" for label, fmt in rows)
    agreement = live.get("agreement")
    agreed = (f"{_percent(agreement['share'], 1)} of {agreement['pairs']} mirrored requests answered alike"
              if agreement else "no mirrored request answered by both sides yet")
    drift = live.get("drift")
    drifted = (f"score {drift['score']:.3f} ({drift['status']})" if drift and drift.get("score") is not None
               else f"{drift['status']}: {drift.get('reason') or 'too few rows'}" if drift else "not measured")
    breach = live.get("breach")
    breaching = (f"<div style='color:{ERROR_COLOR}'>breaching the SLO now: {html.escape(breach)}</div>"
                 if breach else "")
    return (f"<table class='mlp-side-table'><tr><th {CELL}></th>{head}</tr>{body}</table>"
            f"{warmup_html(sides)}{mirrored_html(live)}"
            f"<div class='mlp-agreement'>Agreement: {html.escape(agreed)}</div>"
            f"<div class='mlp-drift'>Drift: {html.escape(drifted)}</div>{breaching}")


def warmup_html(sides: list[dict]) -> str:
    """Which answers the latencies leave out (the live gates' `warmup_requests`): without this line a user who
    counts the slow first answers of a fresh candidate would not find them in its p99."""
    warmup = max((s.get("warmup") or 0 for s in sides), default=0)
    if not warmup:
        return ""
    return (f"<div class='mlp-warmup'>p50 and p99 leave out each side's first {warmup} answers of its version (a "
            "fresh replica's warm-up)</div>")


def mirrored_html(live: dict) -> str:
    """In shadow, how many of the champion's requests reached the candidate: a replica mirrors at most 128 at a
    time and drops the rest (and the mirror rate may be below 1), so the candidate's numbers may rest on fewer
    requests than the champion's, which the user should see before trusting them."""
    served = (live.get("champion") or {}).get("requests") or 0
    if live.get("mode") != "shadow" or not served:
        return ""
    mirrored = (live.get("candidate") or {}).get("requests") or 0
    note = "" if mirrored >= served else (": the rest were not mirrored (the mirror rate, or the candidate "
                                          "busy with 128 mirrors per replica)")
    return (f"<div class='mlp-mirrored'>Mirrored: {mirrored} of the champion's {served} requests "
            f"({_percent(min(1.0, mirrored / served), 1)}){note}</div>")


def live_gates_html(live: dict) -> str:
    """Each gate: ✔ passed, ✘ failed, … waiting for data; its message."""
    rows = []
    for gate in live.get("gates") or []:
        mark, color = MARKS[gate.get("passed")]
        state = {True: "passed", False: "failed", None: "waiting"}[gate.get("passed")]
        rows.append(f"<tr class='mlp-gate mlp-gate-{state}'><td {CELL}><b style='color:{color}'>{mark}</b></td>"
                    f"<td {CELL}>{html.escape(gate['name'])}</td><td {CELL}>{html.escape(gate['message'])}</td></tr>")
    verdict = (f"<b style='color:{OK_COLOR}'>every live gate passes: Promote may succeed</b>" if live.get("promotable")
               else "<b>not promotable yet</b>: a gate fails or waits for data")
    return f"<div>Live gates — {verdict}</div><table>{''.join(rows)}</table>"


def refused_lines(report: dict, live: dict | None = None) -> list[str]:
    """A refused promotion as error lines: the headline, then each gate that failed or waits."""
    waiting = {f"live {g['name']}" for g in (live or {}).get("gates") or [] if g.get("passed") is None}
    failed = [g for g in report["gates"] if not g["passed"]]
    lines = [f"not promoted: version {report.get('version')} of {report.get('model')} stays a candidate — "
             f"{len(failed)} of {len(report['gates'])} gates fail or wait for data"]
    lines += [f"{'… waiting' if g['id'] in waiting else '✘ failed'}: {g['id']}: {g['message']}" for g in failed]
    return lines


def charts_html(points: list[dict]) -> str:
    """p99 and request rate per side over the last polls, as two inline SVG charts."""
    if not points:
        return ""
    return "<div style='display:flex;gap:16px;flex-wrap:wrap'>" + "".join(
        chart_svg(title, {side: [p.get(f"{side}_{key}") for p in points] for side in SIDE_COLORS}, unit)
        for title, key, unit in (("p99 latency", "p99_ms", "ms"), ("request rate", "rate_per_s", "/s"))) + "</div>"


def chart_svg(title: str, series: dict[str, list[float | None]], unit: str, width: int = 320,
              height: int = 120) -> str:
    """A line per side (None: a gap), the y axis from 0 to the highest value; no JavaScript."""
    left, right, top, bottom = 44, 8, 20, 14
    inner_w, inner_h = width - left - right, height - top - bottom
    values = [v for points in series.values() for v in points if v is not None]
    highest = max(values, default=0.0) or 1.0
    count = max((len(points) for points in series.values()), default=0)

    def x(i: int) -> float:
        return left + (inner_w * i / (count - 1) if count > 1 else inner_w / 2)

    def y(v: float) -> float:
        return top + inner_h * (1 - v / highest)

    parts = [f'<svg class="mlp-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="12" font-size="11" font-weight="bold">{html.escape(title)} ({unit})</text>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + inner_h}" stroke="#999"/>',
             f'<line x1="{left}" y1="{top + inner_h}" x2="{width - right}" y2="{top + inner_h}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{highest:.3g}</text>',
             f'<text x="{left - 4}" y="{top + inner_h}" font-size="10" text-anchor="end">0</text>']
    for n, (side, points) in enumerate(series.items()):
        color = SIDE_COLORS.get(side, "#333")
        segments: list[list[str]] = [[]]
        for i, v in enumerate(points):
            if v is None:
                segments.append([])
            else:
                segments[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for segment in segments:
            if len(segment) > 1:
                parts.append(f'<polyline class="mlp-series-{side}" fill="none" stroke="{color}" stroke-width="2" '
                             f'points="{" ".join(segment)}"/>')
            elif segment:
                cx, cy = segment[0].split(",")
                parts.append(f'<circle class="mlp-series-{side}" cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
        parts.append(f'<text x="{width - right - 150 + 80 * n}" y="12" font-size="10" fill="{color}">{side}</text>')
    parts.append("</svg>")
    return "".join(parts)
