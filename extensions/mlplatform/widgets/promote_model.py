"""PromoteModel: check a registered model version against the platform's gates, then promote it.

    from mlplatform.widgets import PromoteModel
    PromoteModel()       # choose a version, "Check gates" (changes nothing), Promote when all pass; Roll back

Every action calls `mlplatform.registry` (evaluate, promote, rollback, history: the platform service) in a
background thread. Promote is enabled only while the gate report of the chosen version shows every gate
passing; the service evaluates the gates again when promoting, so a change in between is still refused.
"""

from __future__ import annotations

import html

import ipywidgets as w

from .. import registry
from ..environment import read_environment
from ..models import list_models
from ..registry.policy import resolve_policy
from .common import (
    ERROR_COLOR,
    LABEL,
    OK_COLOR,
    WIDE,
    Background,
    ErrorLines,
    close_tree,
    lines_html,
    on_click,
    set_options,
    version_label,
)

CELL = 'style="padding:2px 8px;text-align:left;vertical-align:top"'
FIT = {"width": "auto"}  # buttons as wide as their label ("Promote to @champion" is cut at the default width)
ACTIONS = ("check", "promote", "rollback")


class PromoteModel(w.VBox):
    """The promotion golden path as a form. `user`: who acts, as the messages say (the platform service
    records the hub user of the server's token; default: MLPLATFORM_USER); `client`: the MlflowClient that
    lists models (default: MLFLOW_TRACKING_URI's); `catalog` / `promotion`: where the alias's name comes
    from (default: the platform catalog, MLPLATFORM_CATALOG); `team`: the models' team (default: the server's)."""

    def __init__(self, *, user: str | None = None, client=None, catalog=None, promotion=None, team=None, **kwargs):
        self.user = user or read_environment().acting_user
        self._client = client
        self._team = team
        self._rollback_to: str | None = None
        self._policy = {k: v for k, v in (("catalog", catalog), ("promotion", promotion)) if v is not None}
        self._models: dict[str, dict] = {}
        self.report: dict | None = None  # the gate report of the chosen version, once checked
        self.events: list[dict] = []  # the chosen model's audit trail, oldest first
        self.tasks = Background(self._show_error, self._update_buttons)

        self.model = w.Dropdown(description="Model", layout=WIDE, style=LABEL)
        self.version = w.Dropdown(description="Version", layout=WIDE, style=LABEL)
        self.refresh_button = w.Button(description="Refresh models", icon="refresh")
        self.holder = w.HTML()
        self.check_button = w.Button(description="Check gates", icon="check-square", button_style="info",
                                     layout=w.Layout(**FIT))
        self.promote_button = w.Button(description="Promote", icon="arrow-up", button_style="success", disabled=True,
                                       layout=w.Layout(**FIT))
        self.rollback_button = w.Button(description="Roll back", icon="undo", button_style="warning", disabled=True,
                                        layout=w.Layout(**FIT))
        self.problems = ErrorLines()
        self.errors = ErrorLines()
        self.gates = w.HTML()
        self.result = w.HTML()
        self.history = w.HTML()
        for widget, css in ((self.model, "mlp-model"), (self.version, "mlp-version"), (self.gates, "mlp-gates"),
                            (self.check_button, "mlp-check"), (self.promote_button, "mlp-promote"),
                            (self.rollback_button, "mlp-rollback"), (self.errors, "mlp-errors"),
                            (self.history, "mlp-history")):
            widget.add_class(css)
        super().__init__([
            w.HTML("<b>Promote a model</b> — behind the platform's quality gates"),
            w.HBox([self.model, self.refresh_button]), self.version, self.holder, self.problems,
            w.HBox([self.check_button, self.promote_button, self.rollback_button]),
            self.errors, self.gates, self.result, self.history,
        ], **kwargs)
        self.add_class("mlp-promote-model")

        try:  # no policy, no promotion: say so at once rather than at the first click
            self.alias = resolve_policy(**self._policy).alias
            self.promote_button.description = f"Promote to @{self.alias}"
            self.rollback_button.description = f"Roll back @{self.alias}"
        except registry.RegistryError as e:
            self.alias = None
            self.problems.show_error(e)
        self.model.observe(self._on_model, names="value")
        self.version.observe(self._on_version, names="value")
        on_click(self.refresh_button, self.refresh)
        on_click(self.check_button, lambda: self.tasks.start("check", self._check, self.model.value,
                                                             self.version.value))
        on_click(self.promote_button, lambda: self.tasks.start("promote", self._promote, self.model.value,
                                                               self.version.value))
        on_click(self.rollback_button, lambda: self.tasks.start("rollback", self._rollback, self.model.value))
        self.refresh()

    # --- choosing ------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the registered models again (in the background)."""
        self.tasks.start("models", self._load_models)

    def _load_models(self) -> None:
        self._models = {m["name"]: m for m in list_models(self._client)}
        set_options(self.model, sorted(self._models))
        self._on_model()

    def _on_model(self, change=None) -> None:
        name = self.model.value
        model = self._models.get(name) or {"aliases": {}, "versions": []}
        aliases = {a: str(v) for a, v in model["aliases"].items()}
        set_options(self.version, [(version_label(str(v["version"]), aliases), str(v["version"]))
                                   for v in model["versions"]], keep=change is None)
        current = aliases.get(self.alias) if self.alias else None
        self.holder.value = "" if not name or not self.alias else (
            f"@{self.alias} → version {current}" if current else f"no version holds @{self.alias} yet")
        self.events, self._rollback_to = [], None  # the trail of this model comes with _load_history
        self._on_version()
        if name:
            self.tasks.start("history", self._load_history, name)

    def _on_version(self, change=None) -> None:
        self.report, self.gates.value, self.result.value = None, "", ""
        self.errors.clear()
        self._update_buttons()

    @property
    def holder_version(self) -> str | None:
        """The version holding the policy's alias, as last read from MLflow."""
        aliases = (self._models.get(self.model.value) or {}).get("aliases", {})
        return str(aliases[self.alias]) if self.alias in aliases else None

    @property
    def rollback_version(self) -> str | None:
        """The version Roll back moves the alias to, by the platform's record as last read; None: nothing to roll back to."""
        if self.alias is None or not self.model.value:
            return None
        return self._rollback_to

    def _update_buttons(self) -> None:
        busy = self.tasks.running(*ACTIONS)
        chosen = self.alias is not None and self.version.value is not None
        report = self.report
        checked = bool(report and report["passed"] and report["model"] == self.model.value
                       and report["version"] == self.version.value)
        self.check_button.disabled = busy or not chosen
        self.promote_button.disabled = busy or not checked or self.holder_version == self.version.value
        target = self.rollback_version
        self.rollback_button.disabled = busy or target is None
        self.rollback_button.tooltip = (f"move @{self.alias} back to version {target}" if target else
                                        "nothing to roll back to: no earlier version held the alias")

    def _show_error(self, error: BaseException) -> None:
        self.errors.show_error(error)
        if isinstance(error, registry.PromotionRefused):  # the gates as they were when promoting
            self.gates.value = gates_html(error.report)

    # --- actions -------------------------------------------------------------------------------------
    def _check(self, name: str, version: str) -> None:
        self.errors.clear()
        report = registry.evaluate(name, version, team=self._team)
        if (name, version) == (self.model.value, self.version.value):  # still the chosen version
            self.report = report
            self.gates.value = gates_html(report)

    def _promote(self, name: str, version: str) -> None:
        self.errors.clear()
        done = registry.promote(name, version, team=self._team)
        was = f"version {done['previous_version']}" if done["previous_version"] else "none"
        self._after(f"version {done['version']} of {name} holds @{done['alias']} now (was: {was}); "
                    f"recorded as {self.user}'s promotion")

    def _rollback(self, name: str) -> None:
        self.errors.clear()
        done = registry.rollback(name, team=self._team)
        self._after(f"@{done['alias']} of {name} rolled back from version {done['previous_version']} "
                    f"to version {done['version']} by {self.user}")

    def _after(self, message: str) -> None:
        """Read the aliases and the trail again; the message stays."""
        self._load_models()
        self.result.value = lines_html([message], OK_COLOR)

    def _load_history(self, name: str) -> None:
        trail = registry.trail(name, team=self._team)
        events = trail["events"]
        if name == self.model.value:
            self.events, self._rollback_to = events, trail["rollback_to"]
            self.history.value = history_html(events)

    # --- lifecycle -----------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Until the background work is done; for scripts and tests."""
        return self.tasks.wait(timeout)

    def close(self) -> None:
        self.tasks.stop()
        close_tree(self)


def gates_html(report: dict) -> str:
    """The gate report as a table: each gate passed or failed, with its values (a missing model card field's
    message carries the line of code that sets it)."""
    rows = "".join(
        f"<tr><td {CELL}><b style='color:{OK_COLOR if g['passed'] else ERROR_COLOR}'>"
        f"{'✔ pass' if g['passed'] else '✘ FAIL'}</b></td><td {CELL}>{html.escape(g['id'])}</td>"
        f"<td {CELL}>{html.escape(g['message'])}</td></tr>" for g in report["gates"])
    failed = len(report["failed"])
    verdict = (f"<b style='color:{OK_COLOR}'>every gate passes: version {report['version']} may be promoted</b>"
               if report["passed"] else
               f"<b style='color:{ERROR_COLOR}'>{failed} of {len(report['gates'])} gates fail: "
               f"version {report['version']} cannot be promoted</b>")
    return f"<div>Gates for @{html.escape(report['alias'])}: {verdict}</div><table>{rows}</table>"


def history_html(events: list[dict]) -> str:
    if not events:
        return "<i>No promotions recorded yet.</i>"
    head = "".join(f"<th {CELL}>{h}</th>" for h in ("#", "when", "action", "version", "previous", "by"))
    rows = "".join(
        "<tr>" + "".join(f"<td {CELL}>{html.escape(str(v))}</td>" for v in (
            e.get("seq"), e.get("time", "")[:19].replace("T", " "), e.get("action"), e.get("version"),
            e.get("previous_version") or "—", e.get("user"))) + "</tr>"
        for e in reversed(events))
    return f"<div><b>Audit trail</b> (newest first)</div><table><tr>{head}</tr>{rows}</table>"
