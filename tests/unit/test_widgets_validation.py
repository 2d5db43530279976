"""The widgets' forms without servers: fields are checked as they are typed by the APIs' own validators,
problems show as red lines, action buttons stay disabled while the form is not valid, and API errors
become red lines, never tracebacks. Registered models come from MLflow on a SQLite file (no server)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from mlflow import MlflowClient

from mlplatform import serving
from mlplatform.spark.job import SparkJobError
from mlplatform.widgets import PromoteModel, ServeModel, SubmitSparkJob
from mlplatform.widgets.common import ERROR_COLOR, Background, dns_label, error_lines
from mlplatform.widgets.spark_job import parse_conf

from ..support import mlflow_models

# MLflow's SQLite store uses a SQLAlchemy loader that SQLAlchemy deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry on SQLite: 'Iris_Model' versions 1 and 2, @champion → 1; 'empty-model' with no version."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("Iris_Model")
    for _ in range(2):
        client.create_model_version("Iris_Model", "file:///nowhere/model")
    client.set_registered_model_alias("Iris_Model", "champion", "1")
    client.create_registered_model("empty-model")
    return client


@pytest.fixture
def serve(registry):
    widget = ServeModel(client=registry, poll_interval=0.05)
    assert widget.wait(30)
    yield widget
    widget.close()


def test_serve_offers_aliases_then_versions_and_names_the_app_after_the_model(serve):
    assert serve.model.options == ("Iris_Model", "empty-model")
    assert serve.version.options == (("@champion (version 1)", "models:/Iris_Model@champion"),
                                     ("version 2", "models:/Iris_Model/2"),
                                     ("version 1 (@champion)", "models:/Iris_Model/1"))
    assert serve.version.value == "models:/Iris_Model@champion"
    assert serve.fields["name"].value == "iris-model"  # a DNS label made from the model's name
    assert serve.problems.lines == [] and serve.errors.lines == []
    assert not serve.deploy_button.disabled
    assert serve.delete_button.disabled and serve.send_button.disabled  # nothing deployed yet
    assert serve.request() == {"name": "iris-model", "model_uri": "models:/Iris_Model@champion", "replicas": 1,
                               "cpus": 1.0, "gpus": 0.0, "max_batch_size": 32}


@pytest.mark.parametrize("field,value,line", [
    ("name", "Iris_Model", "name: 'Iris_Model' is not a DNS label; allowed: at most 63 lowercase letters"),
    ("replicas", 0, "replicas: 0 is out of range; allowed: an integer from 1 to 16"),
    ("cpus", 0.0, "cpus: 0.0 is out of range; allowed: a number of CPUs per replica above 0, at most 16"),
    ("gpus", 1.5, "gpus: 1.5 is not a GPU count; allowed: 0, a fraction below 1 (shared GPU) or a whole number up to 8"),
    ("max_batch_size", 5000, "max_batch_size: 5000 is out of range; allowed: an integer from 1 to 1024"),
])
def test_serve_shows_the_validators_message_as_a_red_line_and_disables_deploy(serve, field, value, line):
    good = serve.fields[field].value
    serve.fields[field].value = value
    assert [problem for problem in serve.problems.lines if problem.startswith(line)], serve.problems.lines
    assert f'color:{ERROR_COLOR}' in serve.problems.value and "Iris_Model" not in serve.errors.value
    assert serve.deploy_button.disabled
    serve.deploy_button.click()  # a disabled button does nothing, even when clicked from code
    assert serve.deployed is None and serve.state == ""
    serve.fields[field].value = good
    assert serve.problems.lines == [] and not serve.deploy_button.disabled


def test_serve_autoscaling_swaps_replicas_for_min_and_max(serve):
    fields = serve.fields
    assert fields["min_replicas"].layout.display == "none" and fields["replicas"].layout.display is None
    fields["autoscale"].value = True
    assert fields["replicas"].layout.display == "none" and fields["max_replicas"].layout.display is None
    fields["min_replicas"].value, fields["max_replicas"].value = 3, 2
    assert serve.problems.lines == ["min_replicas: 3 is more than max_replicas (2); allowed: 0 to 2"]
    assert serve.deploy_button.disabled
    fields["max_replicas"].value = 4
    assert serve.problems.lines == [] and serve.request()["min_replicas"] == 3 and "replicas" not in serve.request()


def test_serve_keeps_a_typed_name_and_follows_the_model_otherwise(serve):
    serve.model.value = "empty-model"
    assert serve.fields["name"].value == "empty-model"
    assert serve.version.options == () and serve.deploy_button.disabled
    assert serve.problems.lines == ["model: none chosen; choose a registered model and a version or alias"]
    serve.fields["name"].value = "my-endpoint"
    serve.model.value = "Iris_Model"
    assert serve.fields["name"].value == "my-endpoint" and serve.version.value == "models:/Iris_Model@champion"
    serve.fields["name"].value = ""
    assert serve.problems.lines[0].startswith("name: '' is not a DNS label")  # emptied by the user: an error


def test_serve_with_an_empty_registry_says_what_to_do(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    widget = ServeModel(client=MlflowClient(tracking_uri=uri, registry_uri=uri))
    try:
        assert widget.wait(30)
        assert "No registered models yet" in widget.models_note.value
        assert widget.problems.lines == ["model: none chosen; choose a registered model and a version or alias"]
        assert widget.deploy_button.disabled
    finally:
        widget.close()


def test_serve_api_error_is_a_red_line_not_a_traceback(serve, monkeypatch):
    # The serving API refuses an unknown backend before anything is deployed.
    monkeypatch.setenv("MLPLATFORM_BACKEND", "nomad")
    monkeypatch.delenv("MLPLATFORM_CATALOG", raising=False)
    serve.deploy_button.click()
    assert serve.wait(30)
    assert serve.errors.lines == ["MLPLATFORM_BACKEND is 'nomad'; allowed: 'local', 'kubernetes'"]
    assert "Traceback" not in serve.errors.value and f'color:{ERROR_COLOR}' in serve.errors.value
    assert serve.deployed is None and serve.state == "" and serve.progress.value == 0
    assert not serve.deploy_button.disabled  # fix the problem, try again


@pytest.fixture
def notebook_folder(tmp_path, monkeypatch):
    """The kernel's working directory, as in a notebook: the notebook's folder, with one job file."""
    (tmp_path / "wordcount.py").write_text("print('hi')\n")
    (tmp_path / "notes.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLPLATFORM_BACKEND", "local")
    return tmp_path


@pytest.fixture
def job(notebook_folder):
    widget = SubmitSparkJob(poll_interval=0.05)
    yield widget
    widget.close()


def fill(widget: SubmitSparkJob, **values) -> None:
    for key, value in values.items():
        widget.fields[key].value = value


def test_spark_form_starts_quiet_but_disabled_and_offers_the_folders_python_files(job):
    assert job.fields["main_file"].options == ("wordcount.py",)
    assert job.problems.lines == [] and job.submit_button.disabled  # empty, not yet typed: no red lines yet
    job.submit_button.click()  # disabled: nothing happens
    assert job.app_id == "" and job.state == ""
    fill(job, name="wordcount", main_file="wordcount.py")
    assert job.problems.lines == [] and not job.submit_button.disabled
    assert job.job() == {"name": "wordcount", "main_file": "wordcount.py", "arguments": [], "executors": 1,
                         "executor_cores": 1, "executor_memory": "1g", "driver_memory": "1g", "conf": {}}


def test_spark_shows_every_bad_field_at_once_in_the_apis_words(job):
    fill(job, name="Word Count", main_file="wordcount.txt", arguments='in.txt "out', executors=0, executor_cores=-1,
         executor_memory="2Gi", driver_memory="100m", conf="spark.sql.shuffle.partitions=8\nspark.master=local[4]")
    assert job.problems.lines == [
        "name: 'Word Count' is not a valid application name; use lowercase letters, digits and '-', starting with a "
        "letter and ending with a letter or digit, at most 47 characters (a DNS label, with room for the id the "
        "platform appends)",
        "main_file: 'wordcount.txt' is not a Python file; the platform runs PySpark applications from a .py file",
        "arguments: 'in.txt \"out' cannot be split (No closing quotation); separate arguments by spaces and quote "
        "one that holds spaces: 'my file.txt'",
        "executors: 0 is too small; use a whole number of at least 1",
        "executor_cores: -1 is too small; use a whole number of at least 1",
        "executor_memory: '2Gi' is not a Spark memory size; use a whole number followed by k, m, g or t, e.g. '512m' "
        "or '2g' (Kubernetes' 'Gi' is not Spark's syntax: write '2g')",
        "driver_memory: '100m' is too small; Spark needs at least '512m'",
        "conf: 'spark.master' cannot be set here: it is set by the platform's backend",
    ]
    assert job.submit_button.disabled and f'color:{ERROR_COLOR}' in job.problems.value
    fill(job, name="wordcount", main_file="wordcount.py", arguments='in.txt "out dir"', executors=2, executor_cores=1,
         executor_memory="2g", driver_memory="512m", conf="# tuning\nspark.sql.shuffle.partitions = 8\n\n")
    assert job.problems.lines == [] and not job.submit_button.disabled
    assert job.job()["arguments"] == ["in.txt", "out dir"]
    assert job.job()["conf"] == {"spark.sql.shuffle.partitions": "8"}


def test_spark_missing_main_file_names_where_it_looked(job, notebook_folder):
    fill(job, name="wordcount", main_file="jobs/missing.py")
    assert job.problems.lines == [
        f"main_file: 'jobs/missing.py' does not exist (looked for {notebook_folder / 'jobs' / 'missing.py'}); give "
        "the path of an existing .py file, relative to the notebook's folder or absolute"]
    assert job.submit_button.disabled


def test_spark_conf_lines_must_be_key_value():
    assert parse_conf("spark.a=1\n  spark.b = x=y \n# c\n") == {"spark.a": "1", "spark.b": "x=y"}
    with pytest.raises(SparkJobError, match=r"conf line 2: 'oops' is not a key=value line"):
        parse_conf("spark.a=1\noops")


def test_spark_backend_error_is_a_red_line(job, monkeypatch):
    fill(job, name="wordcount", main_file="wordcount.py")
    monkeypatch.setenv("MLPLATFORM_BACKEND", "nomad")  # refused when submitting: nothing starts
    job.submit_button.click()
    assert job.wait(30)
    assert job.errors.lines == ["MLPLATFORM_BACKEND is 'nomad'; allowed: 'local', 'kubernetes'"]
    assert job.app_id == "" and job.state == "" and job.status_line.value == ""
    assert not job.submit_button.disabled and job.cancel_button.disabled


def test_promote_without_a_policy_says_so_and_offers_no_action(registry, monkeypatch):
    monkeypatch.delenv("MLPLATFORM_CATALOG", raising=False)
    widget = PromoteModel(client=registry, user="alice")
    try:
        assert widget.wait(30)
        assert widget.problems.lines == [
            "no promotion policy: MLPLATFORM_CATALOG is not set (it is on servers the platform starts); pass "
            "catalog= (a Catalog or a catalog file) or promotion="]
        assert widget.version.options == (("version 2", "2"), ("version 1 (@champion)", "1"))
        assert widget.check_button.disabled and widget.promote_button.disabled and widget.rollback_button.disabled
    finally:
        widget.close()


def test_promote_lists_versions_with_the_alias_and_waits_for_a_gate_check(registry, monkeypatch):
    monkeypatch.delenv("MLPLATFORM_SERVICE_URL", raising=False)
    widget = PromoteModel(client=registry, user="alice", promotion={"alias": "champion"})
    try:
        assert widget.wait(30)
        assert widget.model.value == "Iris_Model"
        assert widget.version.options == (("version 2", "2"), ("version 1 (@champion)", "1"))
        assert widget.holder.value == "@champion → version 1"
        assert widget.promote_button.description == "Promote to @champion"
        assert not widget.check_button.disabled
        # @champion was set outside the audit trail: no earlier holder to roll back to.
        assert widget.rollback_button.disabled and widget.rollback_version is None
        assert widget.promote_button.disabled  # only after a gate check that passes
        # The trail is the platform service's: outside a server of the platform, the widget says so.
        assert widget.history.value == "" and widget.errors.lines == [
            "promotion goes through the platform service: MLPLATFORM_SERVICE_URL and JUPYTERHUB_API_TOKEN are set "
            "in servers the platform's hub starts"]
    finally:
        widget.close()


def test_error_lines_read_like_the_api_and_hide_no_unexpected_type():
    invalid = serving.InvalidServingRequest([("name", "'A' is not a DNS label"), ("replicas", "0 is out of range")])
    assert error_lines(invalid) == ["name: 'A' is not a DNS label", "replicas: 0 is out of range"]
    assert error_lines(serving.ServingConflict("needs 9 GPUs")) == ["needs 9 GPUs"]
    assert error_lines(KeyError("x")) == ["KeyError: 'x'"]  # a surprise names its type
    assert len(error_lines(serving.BackendUnavailable("\n".join(map(str, range(50)))))) == 21


def test_dns_label_from_model_names():
    assert [dns_label(n) for n in ("Iris_Classifier", "iris", "3-layer net", "--")] == \
           ["iris-classifier", "iris", "layer-net", "model"]


def test_background_errors_become_lines_and_stop_ends_pollers():
    seen, changes = [], []
    tasks = Background(seen.append, lambda: changes.append(1))
    polls = []

    def poll():
        while tasks.sleep(0.01):
            polls.append(time.monotonic())

    tasks.start("poll", poll)
    tasks.start("boom", lambda: json.loads("{"))
    assert tasks.wait(0.2) is False and tasks.running("poll")  # a poller runs until stopped
    started = time.monotonic()
    tasks.stop()
    assert time.monotonic() - started < 1 and not tasks.running()
    assert [type(e).__name__ for e in seen] == ["JSONDecodeError"] and len(polls) > 3
    assert not [t for t in threading.enumerate() if t.name.startswith("mlplatform-widget-")]


def test_serve_prefills_the_test_request_with_the_logged_input_example(tmp_path):
    """A real logged model (MLflow on SQLite, artifacts in a folder): its input example when it has one,
    else one row built from its signature."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_experiment("mlplatform-tests", artifact_location=(tmp_path / "artifacts").as_uri())
    example = mlflow_models.TRAINING[mlflow_models.FEATURES].tail(2)
    with_example = mlflow_models.register_model(uri, "with-example", dataset=False, input_example=example)
    without = mlflow_models.register_model(uri, "without-example", dataset=False)
    widget = ServeModel(client=client, poll_interval=0.05)
    try:
        assert widget.wait(30)
        rows = widget._example_rows({"model_uri": with_example.uri, "model_version": with_example.version}, None)
        assert json.loads(rows) == example.to_dict(orient="records")
        rows = widget._example_rows({"model_uri": without.uri, "model_version": without.version}, None)
        assert json.loads(rows) == [{c: 0.0 for c in mlflow_models.FEATURES}]  # the signature's double columns
    finally:
        widget.close()


def test_the_budget_line_is_empty_outside_the_platform_and_colours_the_status(monkeypatch):
    from mlplatform.widgets.budget import BudgetLine

    monkeypatch.delenv("MLPLATFORM_SERVICE_URL", raising=False)
    line = BudgetLine()
    assert line.wait(10) and (line.value, line.status) == ("", None)
    status = {"has_budget": True, "line": "team-vision: 412 of 500 GPU-hours used in December", "warning": True,
              "exceeded": False}
    assert BudgetLine._html(status) == ('<span style="color:#8a6d3b">Budget: team-vision: 412 of 500 GPU-hours used '
                                        'in December</span>')
    assert "#c62828" in BudgetLine._html({**status, "exceeded": True})
    assert BudgetLine._html({**status, "has_budget": False}) == ""
