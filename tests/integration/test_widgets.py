"""The widgets against the real local backends, driven as a notebook user would: values set on the fields,
buttons clicked, then the widget's state checked and what reached the backend read back from it —
PromoteModel against the platform's MLflow (the alias, the audit trail), SubmitSparkJob with the real
spark-submit, ServeModel with a real Ray head and Ray Serve (one deploy and one redeploy for the module, on
the session's shared head, stopped first so that the deploy starts it; at the session's end no Ray process
may be left)."""

from __future__ import annotations

import html
import json
import os
import signal
import time

import pytest
import requests
from mlflow import MlflowClient

from mlplatform import serving, spark
from mlplatform.spark.driver_log import LOG4J_RECORD
from mlplatform.widgets import PromoteModel, ServeModel, SubmitSparkJob

from ..conftest import SHARED_RAY_PORT
from ..support import mlflow_models
from ..support.as_server import act_as
from ..support.mlflow_access import s3_admin, workspace
from ..support.mlflow_models import SAMPLE_ROWS, unique_name
from ..support.ray_head import local_backend_environ, module_on_shared_head
from ..support.processes import processes_with
from .test_spark_local import FAILING, LONG, QUICK, write_job

RAY_PORT = SHARED_RAY_PORT  # the session's shared head (conftest.py)
ORDER = ["submitted", "starting", "deploying", "running"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints when logging models


def distinct(values: list[str]) -> list[str]:
    """`values` without repeats in a row (the states a widget went through)."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


# --- PromoteModel --------------------------------------------------------------------------------

def test_promote_checks_the_gates_first_then_moves_the_alias_and_rolls_back(platform, hub, monkeypatch):
    """As alice's notebook: the platform service (with the catalog's gates) does each action."""
    _, env = hub.start_server("alice")
    act_as(monkeypatch, env)
    monkeypatch.setenv("MLPLATFORM_CATALOG", env["MLPLATFORM_CATALOG"])
    mlflow = MlflowClient(platform.mlflow_url)
    name = unique_name("promo")
    tags = {"version_tags": {"intended_use": "widget tests"}, "model_tags": {"owner": "team-vision"},
            "experiment": "team-vision"}
    with workspace("team-vision"), s3_admin(platform):
        for accuracy in (0.95, 0.5, 0.97):  # versions 1, 2 (fails the metric gate), 3
            mlflow_models.register_model(platform.mlflow_url, name, metrics={"accuracy": accuracy}, **tags)
    with workspace("team-vision"):  # the widget lists the team's models, as in alice's notebook
        promote_with_the_widget(mlflow, name)


def promote_with_the_widget(mlflow, name):
    widget = PromoteModel(user="alice", client=mlflow)
    try:
        assert widget.wait(60)
        widget.model.value = name
        widget.version.value = "1"
        assert widget.wait(60) and widget.errors.lines == []
        assert widget.holder.value == "no version holds @champion yet"
        assert widget.promote_button.disabled and widget.rollback_button.disabled

        # Check gates: every gate with its values, and nothing changes in MLflow.
        widget.check_button.click()
        assert widget.wait(60) and widget.errors.lines == []
        assert widget.report["passed"] and widget.gates.value.count("✔ pass") == 5
        assert "accuracy is 0.95, needs &gt;= 0.92" in widget.gates.value
        assert mlflow.get_registered_model(name).aliases == {}
        assert not widget.promote_button.disabled

        widget.promote_button.click()
        assert widget.wait(60) and widget.errors.lines == []
        assert mlflow.get_registered_model(name).aliases == {"champion": "1"}
        assert f"version 1 of {name} holds @champion now (was: none)" in widget.result.value
        assert widget.holder.value == "@champion → version 1" and widget.promote_button.disabled
        assert [(e["action"], e["version"], e["user"]) for e in widget.events] == [("promote", "1", "alice")]
        assert "alice" in widget.history.value
        # The first holder of the alias: nothing to roll back to, and the button says so.
        assert widget.rollback_button.disabled and widget.rollback_version is None
        assert widget.rollback_button.tooltip.startswith("nothing to roll back to")
        # Labels fit: buttons are as wide as "Promote to @champion".
        assert widget.promote_button.description == "Promote to @champion"
        assert {b.layout.width for b in (widget.check_button, widget.promote_button, widget.rollback_button)} == {"auto"}

        # A version that fails a gate: shown as FAIL with its value; Promote stays off.
        widget.version.value = "2"
        widget.check_button.click()
        assert widget.wait(60)
        assert widget.report["failed"] == ["accuracy >= 0.92", "accuracy no worse than @champion"]
        assert "✘ FAIL" in widget.gates.value and "accuracy is 0.5, needs &gt;= 0.92" in widget.gates.value
        assert widget.promote_button.disabled
        widget.promote_button.click()  # disabled: nothing happens
        assert widget.wait(60) and mlflow.get_registered_model(name).aliases == {"champion": "1"}

        # Gates pass at the check, one fails before Promote: the registry refuses, a red line says why.
        widget.version.value = "3"
        widget.check_button.click()
        assert widget.wait(60) and widget.report["passed"]
        mlflow.delete_model_version_tag(name, "3", "intended_use")
        widget.promote_button.click()
        assert widget.wait(60)
        # ... with the line of code that sets the missing field, in the red line and in the gate table.
        fix = f"""MlflowClient().set_model_version_tag({name!r}, '3', 'intended_use', "...")"""
        assert widget.errors.lines == [f"version 3 of {name!r} was not promoted to @champion: 1 of 5 gates failed: "
                                       f"model card: intended_use: tag 'intended_use' is missing; set it on the "
                                       f"version with {fix} (or on the registered model with set_registered_model_tag)"]
        assert "✘ FAIL" in widget.gates.value and mlflow.get_registered_model(name).aliases == {"champion": "1"}
        assert html.escape(fix) in widget.gates.value

        mlflow.set_model_version_tag(name, "3", "intended_use", "widget tests")
        widget.check_button.click()
        assert widget.wait(60) and widget.report["passed"]
        widget.promote_button.click()
        assert widget.wait(60) and mlflow.get_registered_model(name).aliases == {"champion": "3"}

        assert widget.rollback_version == "1" and not widget.rollback_button.disabled
        assert widget.rollback_button.tooltip == "move @champion back to version 1"
        widget.rollback_button.click()
        assert widget.wait(60) and widget.errors.lines == []
        assert mlflow.get_registered_model(name).aliases == {"champion": "1"}
        assert f"@champion of {name} rolled back from version 3 to version 1 by alice" in widget.result.value
        assert [(e["action"], e["version"], e["previous_version"]) for e in widget.events] == [
            ("promote", "1", None), ("promote", "3", "1"), ("rollback", "1", "3")]
    finally:
        widget.close()


# --- SubmitSparkJob ------------------------------------------------------------------------------

@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    """A notebook's folder as the kernel's working directory; jobs' state under a fresh HOME."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLPLATFORM_BACKEND", "local")
    monkeypatch.chdir(folder)
    return folder


def submit(widget: SubmitSparkJob, **values) -> None:
    for key, value in {"driver_memory": "512m", **values}.items():  # two JVMs at most on 2 cores
        widget.fields[key].value = value
    assert widget.problems.lines == [] and not widget.submit_button.disabled
    widget.submit_button.click()


def test_spark_job_runs_to_completed_with_the_ui_link_and_the_driver_log(notebooks):
    write_job(notebooks, "quick.py", QUICK)
    widget = SubmitSparkJob(poll_interval=0.3, log_lines=400)
    states, links = [], []
    widget.observe(lambda c: states.append(c["new"]), names="state")
    widget.ui_link.observe(lambda c: links.append(c["new"]), names="value")
    try:
        assert widget.fields["main_file"].options == ("quick.py",)
        submit(widget, name="quick", main_file="quick.py", arguments="--label 'two words'", executors=2,
               conf="spark.sql.shuffle.partitions=4")
        assert widget.wait(240)
        status = spark.status(widget.app_id)  # what the backend ran
        assert widget.state == status["state"] == "COMPLETED", widget.log_text
        assert status["job"]["arguments"] == ["--label", "two words"] and status["job"]["executors"] == 2
        assert status["job"]["conf"] == {"spark.sql.shuffle.partitions": "4"}
        assert distinct(states) == ["SUBMITTED", "RUNNING", "COMPLETED"]
        assert any("Spark UI: <a href=\"http://127.0.0.1:" in link for link in links)  # while it ran
        assert widget.ui_link.value == ""
        assert f"sum: 5050 app: {widget.app_id}" in widget.log_text  # the Spark log has both streams
        # "Output": the job's print without Spark's log4j lines, which stay in the Spark log, collapsed.
        assert f"sum: 5050 app: {widget.app_id}" in widget.output_text and "Output" in widget.output.value
        assert any(LOG4J_RECORD.match(line) for line in widget.log_text.splitlines())
        assert not any(LOG4J_RECORD.match(line) for line in widget.output_text.splitlines())
        assert widget.spark_log.selected_index is None and widget.spark_log.layout.display is None
        assert widget.errors.lines == [] and widget.progress.bar_style == "success"
        assert widget.cancel_button.disabled and not widget.submit_button.disabled
    finally:
        widget.close()


def test_a_failing_job_shows_its_error_line_in_red(notebooks):
    write_job(notebooks, "failing.py", FAILING)
    widget = SubmitSparkJob(poll_interval=0.3)
    try:
        submit(widget, name="failing", main_file="failing.py")
        assert widget.wait(240)
        assert widget.state == spark.status(widget.app_id)["state"] == "FAILED"
        assert widget.errors.lines == ["the job failed: RuntimeError: the input table is empty"]
        assert "Traceback (most recent call last):" in widget.log_text  # the driver's, in the log tail
        assert widget.output_text.splitlines()[-1] == "RuntimeError: the input table is empty"  # the job's own
        assert widget.progress.bar_style == "danger"
    finally:
        widget.close()


def test_cancel_stops_every_process_of_the_job(notebooks):
    write_job(notebooks, "long.py", LONG)
    widget = SubmitSparkJob(poll_interval=0.3)
    app_id = None
    try:
        submit(widget, name="long", main_file="long.py", executors=2)
        until(lambda: widget.state == "RUNNING", 120, "the job runs")
        app_id = widget.app_id
        assert not widget.cancel_button.disabled and "127.0.0.1" in widget.ui_link.value
        widget.cancel_button.click()
        assert widget.wait(60)
        assert widget.state == spark.status(app_id)["state"] == "CANCELLED"
        assert processes_with(app_id) == []
        assert widget.cancel_button.disabled and widget.progress.bar_style == "warning"
    finally:
        widget.close()
        for line in processes_with(app_id) if app_id else []:
            os.kill(int(line.split()[0]), signal.SIGKILL)


# --- ServeModel ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_head(shared_ray_head, platform):
    """The environment of a notebook on the local backend, on the session's shared head."""
    with module_on_shared_head(shared_ray_head, local_backend_environ(RAY_PORT, platform.mlflow_url),
                               restart=True) as head:
        yield head


@pytest.fixture(scope="module")
def served(ray_head, platform):
    """A registered model (@champion → version 1) deployed from the widget, its states recorded."""
    name = unique_name("iris")
    v1 = mlflow_models.register_model(platform.mlflow_url, name)
    MlflowClient(platform.mlflow_url).set_registered_model_alias(name, "champion", v1.version)
    widget = ServeModel(poll_interval=0.3)
    states: list[str] = []
    widget.observe(lambda c: states.append(c["new"]), names="state")
    try:
        assert widget.wait(60)
        widget.model.value = name
        assert widget.version.value == f"models:/{name}@champion"
        widget.deploy_button.click()
        assert widget.deploy_button.disabled  # while it deploys
        finished = widget.wait(400)
        yield {"widget": widget, "name": name, "app": widget.deployed, "states": states, "finished": finished}
    finally:
        widget.close()


def test_deploy_steps_through_the_states_to_running_with_the_endpoint(served):
    widget, app = served["widget"], served["app"]
    assert served["finished"], widget.status_line.value
    assert app == f"iris-{served['name'].rsplit('-', 1)[1]}", widget.errors.lines  # the model's name, as a DNS label
    states = distinct(served["states"])
    assert states == [s for s in ORDER if s in states] and states[-1] == "running", (states, widget.errors.lines)
    assert {"submitted", "starting", "deploying"} <= set(states)  # this deploy started the head
    status = serving.status(app)  # what the backend has
    assert status["state"] == "running" and status["model_version"] == "1"
    assert status["model_uri"] == f"models:/{served['name']}@champion"
    assert widget.url == status["url"] == f"http://127.0.0.1:{RAY_PORT + 2}/{app}"
    assert f'href="{status["url"]}"' in widget.endpoint.value
    assert (widget.progress.value, widget.progress.bar_style) == (4, "success")
    assert "version 1, replicas 1/1" in widget.status_line.value and widget.errors.lines == []
    assert not widget.send_button.disabled and not widget.delete_button.disabled
    # Each step with the seconds since the click, in the order they happened.
    labels, seconds = [s[0] for s in widget.steps], [s[1] for s in widget.steps]
    assert labels == ["submitted", "Ray head starting", "config sent", "replica starting", "running"], widget.steps
    assert seconds == sorted(seconds) and seconds[0] < 0.5
    assert f"running · {seconds[-1]:.1f} s" in widget.steps_line.value


def test_send_test_request_prefilled_from_the_signature(served):
    widget, app = served["widget"], served["app"]
    assert json.loads(widget.request_box.value) == [{"x1": 0.0, "x2": 0.0}]  # the signature's double columns
    widget.send_button.click()
    assert widget.wait(60) and widget.errors.lines == []
    assert widget.last_answer == serving.predict(app, [{"x1": 0.0, "x2": 0.0}])
    widget.request_box.value = json.dumps(SAMPLE_ROWS)
    widget.send_button.click()
    assert widget.wait(60) and widget.last_answer == [0, 1]
    assert "Predictions" in widget.answer.value and "[0, 1]" in widget.answer.value

    widget.request_box.value = '[{"x1": 0.1}]'  # the endpoint's 400 becomes a red line
    widget.send_button.click()
    assert widget.wait(60)
    assert any("Model is missing inputs ['x2']" in line for line in widget.errors.lines), widget.errors.lines
    assert "Traceback" not in widget.errors.value
    widget.request_box.value = '[{"x1": '
    widget.send_button.click()
    assert widget.errors.lines[0].startswith("test rows: not JSON (")


def test_a_refused_deploy_is_a_red_line_and_deploys_nothing(served, platform):
    other = ServeModel(poll_interval=0.3)
    try:
        assert other.wait(60)
        other.model.value = served["name"]
        other.fields["name"].value = "too-big"
        other.fields["gpus"].value = 8.0  # the catalog's most per replica; the local head has none
        other.deploy_button.click()
        assert other.wait(120)
        assert len(other.errors.lines) == 1 and other.errors.lines[0].startswith("'too-big' needs 8 GPUs")
        assert other.deployed is None and other.state == "" and other.progress.value == 0
        assert "too-big" not in serving.backend().names()
    finally:
        other.close()


def test_redeploy_another_version_from_the_widget(served, platform):
    widget, app = served["widget"], served["app"]
    mlflow_models.register_model(platform.mlflow_url, served["name"])  # version 2
    widget.refresh()
    assert widget.wait(60)
    widget.version.value = f"models:/{served['name']}/2"
    served["states"].clear()
    widget.deploy_button.click()
    assert widget.wait(300)
    assert distinct(served["states"])[-1] == "running" and "deploying" in served["states"], served["states"]
    assert [s[0] for s in widget.steps] == ["submitted", "config sent", "replica starting", "running"], widget.steps
    assert serving.status(app)["model_version"] == "2" and "version 2" in widget.status_line.value
    r = requests.post(f"{widget.url}/predict", json=SAMPLE_ROWS, timeout=30)
    assert r.json() == {"predictions": [0, 1]} and r.headers["X-Model-Version"] == "2"


def test_delete_removes_the_endpoint(served):
    widget, app = served["widget"], served["app"]
    url = widget.url
    widget.delete_button.click()
    assert widget.wait(120) and widget.errors.lines == []
    assert widget.state == "deleted" and widget.url == "" and widget.endpoint.value == ""
    with pytest.raises(serving.DeploymentNotFound):
        serving.status(app)
    assert requests.post(f"{url}/predict", json=SAMPLE_ROWS, timeout=30).status_code == 404
    assert widget.delete_button.disabled and widget.send_button.disabled and not widget.deploy_button.disabled
