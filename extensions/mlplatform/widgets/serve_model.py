"""ServeModel: deploy a registered MLflow model to Ray Serve from a notebook, watch it start, try it.

    from mlplatform.widgets import ServeModel
    ServeModel()       # choose the model and a version or alias, Deploy, then "Send test request"

Every action calls `mlplatform.serving` (deploy, status, predict, generate, delete) in a background
thread, so the kernel stays free while Ray starts. The form is checked as it is typed by
`serving.serving_request`, the API's own validator. Redeploying is Deploy again with another version.
"""

from __future__ import annotations

import html
import json
import threading
import time

import ipywidgets as w
import requests
from traitlets import Unicode

from .. import serving
from ..localhost import poll_intervals
from ..models import list_models
from ..serving.backend import SETTLED_STATES
from ..serving.spec import MODEL_URI
from .budget import BudgetLine
from .common import (
    LABEL,
    WIDE,
    Background,
    CommitLine,
    ErrorLines,
    close_tree,
    dns_label,
    link,
    on_click,
    pre,
    set_options,
    version_label,
)

STEPS = (serving.SUBMITTED, serving.STARTING, serving.DEPLOYING, serving.RUNNING)
# How each state of a deploy reads in its list of steps (when it was first seen, from the click).
STEP_LABELS = {serving.SUBMITTED: "submitted", serving.STARTING: "Ray head starting",
               serving.DEPLOYING: "replica starting", serving.RUNNING: "running", serving.FAILED: "failed"}
TEXT_GENERATION = "text-generation"
EXAMPLE_ROWS = 5  # at most this many rows of a logged input example prefill the test request
# An example value per MLflow column type, to prefill the test request from the model's signature.
EXAMPLE_VALUES = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False, "string": "text",
                  "binary": "", "datetime": "2026-01-01T00:00:00"}


class ServeModel(w.VBox):
    """The serving golden path as a form. `client`: the MlflowClient models are listed from (default:
    MLFLOW_TRACKING_URI's); `poll_interval`: the most seconds between status polls (every 0.1 s at first,
    then less often); `clock`: seconds for the steps' durations (time.monotonic). `close()` stops the polls."""

    state = Unicode("", help="submitted, starting, deploying, running, failed, deleting, deleted; '' before")
    url = Unicode("", help="the endpoint, once running")

    def __init__(self, *, client=None, poll_interval: float = 1.0, max_tokens: int = 64, clock=time.monotonic,
                 **kwargs):
        self._client = client
        self.poll_interval = poll_interval
        self._clock = clock
        self.steps: list[tuple[str, float]] = []  # the last deploy's steps: (label, seconds from the click)
        self._deploy_started: float | None = None
        self.deployed: str | None = None  # the application this widget deployed: test requests go there
        self.task = "predict"
        self.last_answer = None
        self._models: dict[str, dict] = {}
        self._auto_name = ""  # the name last filled in from the model (replaced until the user edits it)
        self._prefill = ""  # the example last written into the request box (likewise)
        self._models_read = self._incomplete = self._name_typed = False
        self.tasks = Background(self._show_error, self._update_buttons)

        self.model = w.Dropdown(description="Model", layout=WIDE, style=LABEL)
        self.version = w.Dropdown(description="Version or alias", layout=WIDE, style=LABEL)
        self.refresh_button = w.Button(description="Refresh models", icon="refresh")
        self.models_note = w.HTML()
        self.fields = {
            "name": w.Text(description="Name", placeholder="a DNS label, e.g. iris", continuous_update=True),
            "autoscale": w.Checkbox(description="Autoscale", value=False, indent=False, layout=w.Layout(width="8em")),
            "replicas": w.IntText(value=1, description="Replicas", continuous_update=True),
            "min_replicas": w.IntText(value=1, description="Min replicas", continuous_update=True),
            "max_replicas": w.IntText(value=2, description="Max replicas", continuous_update=True),
            "cpus": w.FloatText(value=1.0, description="CPUs per replica", continuous_update=True),
            "gpus": w.FloatText(value=0.0, description="GPUs per replica", continuous_update=True),
            "max_batch_size": w.IntText(value=32, description="Max batch size", continuous_update=True),
        }
        for field in self.fields.values():
            if not isinstance(field, w.Checkbox):
                field.layout, field.style = w.Layout(width="22em"), LABEL
        self.fields["name"].layout = WIDE
        self.problems = ErrorLines()
        self.deploy_button = w.Button(description="Deploy", button_style="primary", icon="rocket")
        self.delete_button = w.Button(description="Delete", button_style="danger", icon="trash", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=len(STEPS), description="Status", style=LABEL)
        self.status_line = w.HTML()
        self.steps_line = w.HTML()
        self.commit_line = CommitLine()  # GitOps mode: the commit of the last deploy or delete
        self.endpoint = w.HTML()
        self.errors = ErrorLines()
        self.request_box = w.Textarea(description="Test rows (JSON)", placeholder='[{"column": 1.0}]',
                                      layout=w.Layout(width="40em", height="6em"), style=LABEL)
        self.max_tokens = w.IntText(value=max_tokens, description="max_tokens", style=LABEL,
                                    layout=w.Layout(width="22em", display="none"))
        self.send_button = w.Button(description="Send test request", icon="paper-plane", disabled=True,
                                     layout=w.Layout(width="14em"))
        self.answer = w.HTML()

        # CSS classes name the parts for the browser tests (and for anyone styling the widget).
        for widget, css in ((self.model, "mlp-model"), (self.version, "mlp-version"), (self.fields["name"], "mlp-name"),
                            (self.deploy_button, "mlp-deploy"), (self.delete_button, "mlp-delete"),
                            (self.status_line, "mlp-status"), (self.steps_line, "mlp-steps"),
                            (self.endpoint, "mlp-endpoint"),
                            (self.request_box, "mlp-request"), (self.send_button, "mlp-send"),
                            (self.answer, "mlp-answer"), (self.errors, "mlp-errors"), (self.problems, "mlp-problems")):
            widget.add_class(css)
        f = self.fields
        self.budget = BudgetLine()  # the team's GPU budget, as the platform service counts it
        super().__init__([
            w.HTML("<b>Serve a model</b> — a registered MLflow model on Ray Serve"), self.budget,
            w.HBox([self.model, self.refresh_button]), self.version, self.models_note, f["name"],
            w.HBox([f["autoscale"], f["replicas"], f["min_replicas"], f["max_replicas"]]),
            f["cpus"], f["gpus"], f["max_batch_size"], self.problems,
            w.HBox([self.deploy_button, self.delete_button]), w.HBox([self.progress, self.status_line]),
            self.steps_line, self.commit_line, self.endpoint, self.errors, self.request_box, self.max_tokens,
            self.send_button, self.answer,
        ], **kwargs)
        self.add_class("mlp-serve-model")

        self.model.observe(self._on_model, names="value")
        for widget in (self.version, *self.fields.values()):
            widget.observe(self._validate, names="value")
        f["autoscale"].observe(self._show_scaling, names="value")
        on_click(self.refresh_button, self.refresh)
        on_click(self.deploy_button, self._on_deploy)
        on_click(self.delete_button, self._on_delete)
        on_click(self.send_button, self._on_send)
        self._show_scaling()
        self._validate()
        self.refresh()

    # --- the form ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the registered models again (in the background)."""
        self.models_note.value = "<i>reading registered models from MLflow…</i>"
        self.tasks.start("models", self._load_models)
        if hasattr(self, "budget"):  # not during __init__'s first refresh: the line is read as it is made
            self.budget.refresh()

    def _load_models(self) -> None:
        try:
            models = list_models(self._client)
        except Exception:
            self.models_note.value = ""
            raise
        self._models, self._models_read = {m["name"]: m for m in models}, True
        set_options(self.model, sorted(self._models))
        self._on_model()
        self._validate()
        self.models_note.value = "" if models else (
            "<i>No registered models yet: log one with <code>registered_model_name=...</code>, then Refresh.</i>")

    def _on_model(self, change=None) -> None:
        name = self.model.value
        model = self._models.get(name) or {"aliases": {}, "versions": []}
        aliases = {a: str(v) for a, v in model["aliases"].items()}
        options = [(f"@{alias} (version {version})", f"models:/{name}@{alias}")
                   for alias, version in sorted(aliases.items())]
        options += [(version_label(str(v["version"]), aliases), f"models:/{name}/{v['version']}")
                    for v in model["versions"]]
        set_options(self.version, options, keep=change is None)
        name_field = self.fields["name"]
        if name and name_field.value in ("", self._auto_name):
            self._auto_name = name_field.value = dns_label(name)

    def _show_scaling(self, change=None) -> None:
        auto = self.fields["autoscale"].value
        self.fields["replicas"].layout.display = "none" if auto else None
        for key in ("min_replicas", "max_replicas"):
            self.fields[key].layout.display = None if auto else "none"
        self._validate()

    def request(self) -> dict:
        """The form as `serving.deploy` keyword arguments."""
        f = self.fields
        request = {"name": f["name"].value.strip(), "model_uri": self.version.value, "cpus": f["cpus"].value,
                   "gpus": f["gpus"].value, "max_batch_size": f["max_batch_size"].value}
        if f["autoscale"].value:
            request.update(min_replicas=f["min_replicas"].value, max_replicas=f["max_replicas"].value)
        else:
            request["replicas"] = f["replicas"].value
        return request

    def _validate(self, change=None) -> None:
        try:
            serving.serving_request(**self.request())
            problems = []
        except serving.InvalidServingRequest as e:
            problems = e.problems
        # Not errors yet, though Deploy stays disabled: no model chosen, an empty name nobody has typed.
        name = self.fields["name"]
        self._name_typed |= change is not None and change["owner"] is name and change["new"] != self._auto_name
        pending = {"model_uri"} if self.version.value is None else set()
        if not name.value and not self._name_typed:
            pending.add("name")
        self._incomplete = any(field in pending for field, _ in problems)
        lines = [f"{field}: {message}" for field, message in problems if field not in pending]
        if self.version.value is None and self._models_read:  # clearer than "None is not a registered model"
            lines.insert(0, "model: none chosen; choose a registered model and a version or alias")
        self.problems.show(lines)
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self.tasks.running("deploy", "delete")
        self.deploy_button.disabled = bool(self.problems.lines) or self._incomplete or busy
        self.delete_button.disabled = self.deployed is None or self.tasks.running("delete")
        self.send_button.disabled = self.state != serving.RUNNING or self.tasks.running("send", "delete")

    def _show_error(self, error: BaseException) -> None:
        self.errors.show_error(error)

    # --- deploy and watch ----------------------------------------------------------------------------
    def _on_deploy(self) -> None:
        self._validate()
        if self.problems.lines or self._incomplete:
            return
        request = self.request()
        self.errors.clear()
        self.answer.value = ""
        self.deployed = request["name"]
        self.commit_line.show(None)
        self._deploy_started, self.steps = self._clock(), []
        self._step(STEP_LABELS[serving.SUBMITTED])
        self._show_status({"state": serving.SUBMITTED, "message": "handing the request to the serving backend"})
        self.tasks.start("deploy", self._deploy, request)

    def _deploy(self, request: dict) -> None:
        """Call `serving.deploy` (which returns once the application is handed to Serve, after starting
        Ray if needed) and meanwhile poll `serving.status` until the application runs or failed."""
        outcome: dict = {}

        def call():
            try:
                outcome["status"] = serving.deploy(**request)
            except Exception as e:  # noqa: BLE001 — shown below
                outcome["error"] = e
                return
            if outcome["status"].get("commit"):  # GitOps mode: committed before it was handed on
                self._step("committed")
            self._step("config sent")  # deploy() has handed the application to the backend

        caller = threading.Thread(target=call, name="mlplatform-widget-deploy-call", daemon=True)
        caller.start()
        waits = poll_intervals(self.poll_interval, first=min(0.1, self.poll_interval))
        while True:
            done = not caller.is_alive()
            try:
                status, unanswered = self._status(request["name"]), None
            except serving.ServingError as e:  # the backend did not answer this time: say so, ask again
                status, unanswered = None, e
            if "error" in outcome:
                self.errors.show_error(outcome["error"])
                if status is None:  # nothing was deployed: the form is as before
                    self.deployed = None
                    self._show_status({"state": "", "message": ""})
                else:  # the previous deployment of this name stays
                    self._show_status(status)
                return
            if outcome.get("status", {}).get("commit"):  # GitOps mode: the deploy's commit
                self.commit_line.show(outcome["status"]["commit"])
            if unanswered is not None:
                self.errors.show_error(unanswered)
            elif status is not None:
                self._show_status(status)
                # Until deploy() returns, a status may still be the previous deployment's.
                if status["state"] in STEP_LABELS and ("status" in outcome or status["state"] == serving.STARTING):
                    self._step(STEP_LABELS[status["state"]])
            if done and (status is None or status["state"] in SETTLED_STATES):
                if status is not None and status["state"] == serving.RUNNING:
                    self._learn_model(status)
                return
            if not self.tasks.sleep(next(waits)):
                return

    def _step(self, label: str) -> None:
        """Note `label` as a step of the deploy (the first time it is seen) and show the steps."""
        if self._deploy_started is not None and label not in dict(self.steps):
            self.steps.append((label, self._clock() - self._deploy_started))
            self.steps_line.value = steps_html(self.steps)

    def _status(self, name: str) -> dict | None:
        try:
            return serving.status(name)
        except serving.DeploymentNotFound:
            return None

    def _show_status(self, status: dict) -> None:
        state = status["state"]
        if state in STEPS:
            self.progress.value = STEPS.index(state) + 1
        elif state in ("", "deleted"):
            self.progress.value = 0
        self.progress.bar_style = {"running": "success", "failed": "danger"}.get(state, "info")
        detail = [f"<b>{state}</b>"] if state else []
        if status.get("model_version"):
            replicas = status.get("replicas") or {}
            detail.append(f"{status['model_uri']} → version {status['model_version']}, replicas "
                          f"{replicas.get('running', 0)}/{replicas.get('target') or '?'}")
        if status.get("message"):
            detail.append(html.escape(status["message"]))
        self.status_line.value = " — ".join(detail)
        if status.get("commit"):  # GitOps mode on Kubernetes: the commit the cluster is (or is waiting to be) at
            self.commit_line.show(status["commit"])
        self.url = status.get("url", "") if state == serving.RUNNING else ""
        self.endpoint.value = (f"Endpoint: {link(self.url)} — <code>POST {self.url}/predict</code>"
                               if self.url else "")
        self.state = state
        self._update_buttons()

    def _learn_model(self, status: dict) -> None:
        """Ask the running endpoint which task it serves, and prefill the test request."""
        try:
            info = requests.get(f"{status['url']}/health", timeout=10).json()
        except (requests.RequestException, ValueError) as e:
            info = {}
            self.errors.show([f"the endpoint did not say which model it serves ({status['url']}/health): {e}"])
        self.task = info.get("task") or "predict"
        generate = self.task == TEXT_GENERATION
        self.request_box.description = "Prompt" if generate else "Test rows (JSON)"
        self.max_tokens.layout.display = None if generate else "none"
        example = "Hello" if generate else self._example_rows(status, info.get("input_columns"))
        if example and self.request_box.value.strip() in ("", self._prefill.strip()):
            self._prefill = self.request_box.value = example

    def _example_rows(self, status: dict, columns: list[str] | None) -> str:
        """The served version's logged input example (its first rows), else one row of example values
        from its signature (or its input column names)."""
        import pandas as pd
        from mlflow import MlflowClient

        from ..registry.facts import input_example, signature
        from ..serving.payload import jsonable

        match = MODEL_URI.fullmatch(status["model_uri"])
        inputs = None
        if match:
            client = self._client or MlflowClient()
            logged = input_example(client, match["name"], status["model_version"])
            if isinstance(logged, pd.DataFrame) and not logged.empty:
                return json.dumps(jsonable(logged.head(EXAMPLE_ROWS)), default=str)
            sig, _ = signature(client, match["name"], status["model_version"])
            inputs = (sig or {}).get("inputs")
        if inputs and all(i.get("name") for i in inputs):
            row = {i["name"]: EXAMPLE_VALUES.get(i.get("type"), 0.0) for i in inputs}
        elif columns:
            row = {c: 0.0 for c in columns}
        else:
            return ""
        return json.dumps([row])

    # --- try it, delete it ---------------------------------------------------------------------------
    def _on_send(self) -> None:
        self.errors.clear()
        self.answer.value = ""
        text = self.request_box.value
        if self.task == TEXT_GENERATION:
            try:
                prompt = json.loads(text)  # a JSON list of prompts, or plain text
            except ValueError:
                prompt = text
            if not (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)):
                prompt = text
            name, max_tokens = self.deployed, self.max_tokens.value
            self.tasks.start("send", self._call_endpoint, lambda: serving.generate(name, prompt, max_tokens=max_tokens))
            return
        try:
            rows = json.loads(text)
        except ValueError as e:
            example = self._prefill or '[{"x": 1.0}]'
            self.errors.show([f"test rows: not JSON ({e}); allowed: a JSON list of records, e.g. {example}"])
            return
        name = self.deployed
        self.tasks.start("send", self._call_endpoint, lambda: serving.predict(name, rows))

    def _call_endpoint(self, call) -> None:
        self.last_answer = call()
        title = "Generated" if self.task == TEXT_GENERATION else "Predictions"
        self.answer.value = f"<b>{title}</b>{pre(json.dumps(self.last_answer))}"

    def _on_delete(self) -> None:
        self.errors.clear()
        self.tasks.start("delete", self._delete, self.deployed)

    def _delete(self, name: str) -> None:
        self._show_status({"state": serving.DELETING, "message": f"removing {name}"})
        try:
            deleted = serving.delete(name, wait=True)
        except serving.DeploymentNotFound:
            self.deployed = None
            self._show_status({"state": "", "message": ""})
            raise
        self.deployed, self.last_answer, self.answer.value = None, None, ""
        self.commit_line.show(deleted.get("commit"))
        self._show_status({**deleted, "state": deleted.get("state", "deleted"),
                           "message": deleted.get("message") or f"{name} no longer answers"})

    # --- lifecycle -----------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Until the background work (listing, deploy and its polls, a request) is done; for scripts and tests."""
        return self.tasks.wait(timeout)

    def close(self) -> None:
        """Stop the polls and close the widget (the deployment keeps running)."""
        self.tasks.stop()
        close_tree(self)


def steps_html(steps: list[tuple[str, float]]) -> str:
    """The steps of a deploy, each with the seconds since Deploy was clicked: "submitted · 0.0 s → …"."""
    return "<small>" + " → ".join(f"{html.escape(label)} · {seconds:.1f} s" for label, seconds in steps) + "</small>"
