"""SubmitSparkJob: submit a PySpark application from a notebook and follow it to the end.

    from mlplatform.widgets import SubmitSparkJob
    SubmitSparkJob()     # name, main file, resources, Submit; the state, Spark UI link, the job's output
                         # and (collapsed) Spark's driver log follow

Every action calls `mlplatform.spark` (submit, status, logs, cancel) in a background thread. Fields are
checked as they are typed by `spark.SparkJob`, the API's own validator, one field at a time so that
every problem shows at once.
"""

from __future__ import annotations

import html
import os
import shlex
from pathlib import Path

import ipywidgets as w
from traitlets import Unicode

from .. import spark
from ..spark.backend import TERMINAL_STATES
from ..spark.job import SparkJob, SparkJobError
from .budget import BudgetLine
from .common import LABEL, WIDE, Background, CommitLine, ErrorLines, close_tree, link, on_click, pre

FIELDS = ("name", "main_file", "arguments", "executors", "executor_cores", "executor_memory", "driver_memory",
          "conf")
PLACEHOLDER = {"name": "job", "main_file": "job.py"}  # valid values for the fields not being checked
STEPS = (spark.SUBMITTED, spark.RUNNING)


class SubmitSparkJob(w.VBox):
    """The Spark golden path as a form. Relative main files are looked up in the kernel's working
    directory (the notebook's folder), as `spark.submit` does. `poll_interval`: seconds between polls;
    `log_lines`: how much of the job's output and of the driver log is shown. "Output" is the program's
    own (its prints, warnings, tracebacks); Spark's log4j lines are in "Spark log", collapsed. `close()`
    stops the polls (not the job)."""

    state = Unicode("", help="SUBMITTED, RUNNING, COMPLETED, FAILED or CANCELLED; '' before a submit")
    app_id = Unicode("")

    def __init__(self, *, poll_interval: float = 1.0, log_lines: int = 40, **kwargs):
        self.poll_interval, self.log_lines = poll_interval, log_lines
        self.log_text = self.output_text = ""
        self.tasks = Background(self._show_error, self._update_buttons)
        text = {"layout": WIDE, "style": LABEL, "continuous_update": True}
        number = {"layout": w.Layout(width="22em"), "style": LABEL, "continuous_update": True}
        self.fields = {
            "name": w.Text(description="App name", placeholder="a DNS label, e.g. wordcount", **text),
            "main_file": w.Combobox(description="Main file", options=python_files(),
                                    placeholder="wordcount.py (in this folder)", **text),
            "arguments": w.Text(description="Arguments", placeholder="words.txt counts (shell-style quoting)", **text),
            "executors": w.IntText(value=1, description="Executors", **number),
            "executor_cores": w.IntText(value=1, description="Executor cores", **number),
            "executor_memory": w.Text(value="1g", description="Executor memory", **number),
            "driver_memory": w.Text(value="1g", description="Driver memory", **number),
            "conf": w.Textarea(description="Spark conf",
                               placeholder="spark.sql.shuffle.partitions=8\n(key=value lines)",
                               layout=w.Layout(width="32em", height="5em"), style=LABEL, continuous_update=True),
        }
        self.problems = ErrorLines()
        self.submit_button = w.Button(description="Submit", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=len(STEPS) + 1, description="State", style=LABEL)
        self.status_line = w.HTML()
        self.commit_line = CommitLine()  # GitOps mode: the commit of the submit or cancel
        self.ui_link = w.HTML()
        self.errors = ErrorLines()
        self.output = w.HTML()
        self.driver_log = w.HTML()
        self.spark_log = w.Accordion(children=[self.driver_log], titles=("Spark log",), selected_index=None,
                                     layout=w.Layout(display="none"))  # collapsed; shown once there is a log
        for widget, css in ((self.submit_button, "mlp-submit"), (self.cancel_button, "mlp-cancel"),
                            (self.status_line, "mlp-status"), (self.output, "mlp-output"),
                            (self.driver_log, "mlp-log"),
                            (self.errors, "mlp-errors"), (self.problems, "mlp-problems")):
            widget.add_class(css)
        f = self.fields
        self.budget = BudgetLine()  # the team's GPU budget, as the platform service counts it
        super().__init__([
            w.HTML("<b>Submit a Spark job</b> — a PySpark application"), self.budget,
            f["name"], f["main_file"], f["arguments"], w.HBox([f["executors"], f["executor_cores"]]),
            w.HBox([f["executor_memory"], f["driver_memory"]]), f["conf"], self.problems,
            w.HBox([self.submit_button, self.cancel_button]), w.HBox([self.progress, self.status_line]),
            self.commit_line, self.ui_link, self.errors, self.output, self.spark_log,
        ], **kwargs)
        self.add_class("mlp-spark-job")
        self._touched: set[str] = set()  # fields edited so far: an empty one not yet edited is not an error yet
        self._incomplete = False
        self._backend = None
        for field in f.values():
            field.observe(self._validate, names="value")
        on_click(self.submit_button, self._on_submit)
        on_click(self.cancel_button, self._on_cancel)
        self._validate()

    # --- the form ----------------------------------------------------------------------------------
    def parsed(self, field: str):
        """A field's value as `spark.submit` takes it; SparkJobError when the text cannot be read."""
        value = self.fields[field].value
        if field == "arguments":
            try:
                return shlex.split(value)
            except ValueError as e:
                raise SparkJobError("arguments", value, f"cannot be split ({e}); separate arguments by spaces and "
                                                        "quote one that holds spaces: 'my file.txt'") from None
        if field == "conf":
            return parse_conf(value)
        return value.strip() if isinstance(value, str) else value

    def job(self) -> dict:
        """The form as `spark.submit` keyword arguments (SparkJobError for the first bad field)."""
        return {field: self.parsed(field) for field in FIELDS}

    def _validate(self, change=None) -> None:
        if change is not None:
            self._touched.update(k for k, v in self.fields.items() if v is change["owner"])
        problems, self._incomplete = [], False
        for field in FIELDS:
            try:
                SparkJob(**{**PLACEHOLDER, field: self.parsed(field)})
            except SparkJobError as e:
                if field in self._touched or self.fields[field].value != "":
                    problems.append(str(e))
                else:
                    self._incomplete = True
        if not problems and not self._incomplete:
            problems = self._main_file_problem()
        self.problems.show(problems)
        self._update_buttons()

    def _main_file_problem(self) -> list[str]:
        """Whether the backend finds the main file (a path in the notebook's folder, or a URI)."""
        if self._backend is None:
            try:
                self._backend = spark.backend()  # once: a backend may read its configuration
            except Exception:  # noqa: BLE001 — Submit shows why there is none
                return []
        try:
            self._backend.main_file(self.parsed("main_file"))
        except SparkJobError as e:
            return [str(e)]
        return []

    def _update_buttons(self) -> None:
        self.submit_button.disabled = bool(self.problems.lines) or self._incomplete or self.tasks.running("job")
        self.cancel_button.disabled = (not self.app_id or self.state in TERMINAL_STATES
                                       or self.tasks.running("cancel"))

    def _show_error(self, error: BaseException) -> None:
        self.errors.show_error(error)

    # --- submit, follow, cancel ----------------------------------------------------------------------
    def _on_submit(self) -> None:
        self._touched.update(FIELDS)
        self._validate()
        if self.problems.lines:
            return
        job = self.job()
        self.errors.clear()
        self.app_id, self.ui_link.value = "", ""
        self.log_text = self.output_text = self.output.value = self.driver_log.value = ""
        self.spark_log.layout.display = "none"
        self.commit_line.show(None)
        self._show({"state": "", "message": "submitting"})
        self.tasks.start("job", self._follow, job)

    def _follow(self, job: dict) -> None:
        """Submit, then poll the state and the driver log until the job ends (or `close()`)."""
        try:
            status = spark.submit(**job)
        except Exception:
            self._show({"state": "", "message": ""})  # nothing started; the error shows in red
            raise
        self.app_id = status["app_id"]
        while True:
            self._show(status)
            self._show_log()
            if status["state"] in TERMINAL_STATES or not self.tasks.sleep(self.poll_interval):
                return
            status = spark.status(self.app_id)

    def _show(self, status: dict) -> None:
        state = status["state"]
        self.progress.value = STEPS.index(state) + 1 if state in STEPS else (3 if state else 0)
        self.progress.bar_style = {spark.COMPLETED: "success", spark.FAILED: "danger",
                                   spark.CANCELLED: "warning"}.get(state, "info")
        parts = [f"<b>{state}</b>"] if state else []
        if status.get("app_id"):
            parts.append(f"<code>{html.escape(status['app_id'])}</code>")
        if status.get("message"):
            parts.append(html.escape(status["message"]))
        self.status_line.value = " — ".join(parts)
        if status.get("commit"):  # GitOps mode: the submit's or cancel's commit
            self.commit_line.show(status["commit"])
        ui = status.get("ui_url")
        self.ui_link.value = f"Spark UI: {link(ui)}" if ui and state == spark.RUNNING else ""
        if status.get("error"):
            self.errors.show([f"the job failed: {status['error']}"])
        self.state = state
        self._update_buttons()

    def _show_log(self) -> None:
        out = spark.output(self.app_id, tail=self.log_lines)
        self.output_text = out["text"]
        more = " (last lines)" if out["truncated"] else ""
        self.output.value = f"<b>Output</b>{more}{pre(self.output_text)}" if self.output_text else ""
        log = spark.logs(self.app_id, tail=self.log_lines)
        self.log_text = log["text"]
        self.spark_log.set_title(0, "Spark log (driver, last lines)" if log["truncated"] else "Spark log (driver)")
        self.driver_log.value = pre(self.log_text) if self.log_text else ""
        self.spark_log.layout.display = None if self.log_text else "none"

    def _on_cancel(self) -> None:
        self.tasks.start("cancel", self._cancel, self.app_id)

    def _cancel(self, app_id: str) -> None:
        self._show(spark.cancel(app_id))
        self._show_log()

    # --- lifecycle -----------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Until the background work (the job's polls, a cancel) is done; for scripts and tests."""
        return self.tasks.wait(timeout)

    def close(self) -> None:
        """Stop the polls and close the widget (the job keeps running)."""
        self.tasks.stop()
        close_tree(self)


def parse_conf(text: str) -> dict[str, str]:
    """`key=value` lines (blank lines and `#` comments skipped) as a mapping; the API checks the keys."""
    conf = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SparkJobError(f"conf line {number}", line, "is not a key=value line; write one Spark property "
                                                             "per line, e.g. spark.sql.shuffle.partitions=8")
        conf[key.strip()] = value.strip()
    return conf


def python_files(folder: str | Path | None = None) -> list[str]:
    """The .py files of the notebook's folder, offered as main files."""
    folder = Path(folder or os.getcwd())
    try:
        return sorted(p.name for p in folder.iterdir() if p.suffix == ".py" and p.is_file())
    except OSError:
        return []
