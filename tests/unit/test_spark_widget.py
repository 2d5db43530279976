"""SubmitSparkJob's rough edges (issue 13): the job's own output apart from Spark's log4j lines, and placeholders
that fit their fields. The job runs on the local backend as a real process: a shell script stands in for
spark-submit (log4j records on stderr, the program's prints on stdout, as spark-submit runs PySpark); the real
spark-submit runs in tests/integration/test_widgets.py."""

from __future__ import annotations

import json
import re
import textwrap
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import urlparse

import ipywidgets as w
import pytest
import yaml

from mlplatform.spark import api as spark_api
from mlplatform.spark import local as spark_local
from mlplatform.spark.driver_log import LOG4J_RECORD
from mlplatform.widgets import SubmitSparkJob

from hub_config.catalog import DEFAULT_CATALOG

from ..support.json_handler import JsonHandler

# The average width of a character of JupyterLab's widget font, in em: DejaVu Sans (a common Linux UI font, wider
# than Helvetica or Liberation Sans) averages 0.5 em over these placeholders, measured at 13px with PIL.
EM_PER_CHARACTER = 0.5
INPUT_CHROME_EM = 1.0  # the input's padding and border, and the arrow a browser shows in a Combobox


@pytest.fixture
def stand_in_spark(tmp_path, monkeypatch):
    """The local backend with a stand-in spark-submit; jobs are kept under a temporary HOME."""
    script = tmp_path / "spark" / "bin" / "spark-submit"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n" + textwrap.dedent("""\
        echo "26/12/02 07:55:46 INFO SparkContext: Running Spark version 4.3.0" >&2
        echo "rows: 3"
        echo "26/12/02 07:56:11 INFO DAGScheduler: Job 0 finished: count at wordcount.py:4, took 0.8 s" >&2
        echo "sum: 5050"
        echo "26/12/02 07:56:14 INFO SparkContext: Successfully stopped SparkContext" >&2
    """))
    script.chmod(0o755)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "wordcount.py").write_text("print('rows: 3')\n")
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLPLATFORM_BACKEND", "local")
    monkeypatch.setattr(spark_local, "default_spark_submit", lambda: script)
    spark_api._cached.cache_clear()  # a backend made before would keep the real spark-submit
    yield script
    spark_api._cached.cache_clear()


def test_output_shows_the_jobs_prints_and_spark_log_keeps_log4j_collapsed(stand_in_spark):
    widget = SubmitSparkJob(poll_interval=0.05)
    try:
        widget.fields["name"].value = "wordcount"
        widget.fields["main_file"].value = "wordcount.py"
        widget.submit_button.click()
        assert widget.wait(30) and widget.errors.lines == []
        assert widget.state == "COMPLETED"
        assert widget.output_text == "rows: 3\nsum: 5050"  # the program's own lines, nothing of log4j
        assert "<b>Output</b>" in widget.output.value and "sum: 5050" in widget.output.value
        log4j = [line for line in widget.log_text.splitlines() if LOG4J_RECORD.match(line)]
        assert len(log4j) == 3 and "Successfully stopped SparkContext" in widget.driver_log.value
        # Spark's log is there, but collapsed under its own title.
        assert widget.spark_log.layout.display is None and widget.spark_log.selected_index is None
        assert widget.spark_log.get_title(0) == "Spark log (driver)"
    finally:
        widget.close()


def em(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)em", value or "")
    assert match, f"{value!r}: the form's widths are in em"
    return float(match[1])


def test_single_line_placeholders_fit_their_fields(tmp_path, monkeypatch):
    # "wordcount.py (relative to the notebook's folder)" was cut at "wordcount.py (relative to the no".
    monkeypatch.chdir(tmp_path)
    widget = SubmitSparkJob()
    try:
        fields = {key: f for key, f in widget.fields.items()
                  if isinstance(f, (w.Text, w.Combobox)) and f.placeholder.strip("\u200b")}  # ipywidgets' empty one
        assert set(fields) == {"name", "main_file", "arguments"}
        for key, field in fields.items():
            room = em(field.layout.width) - em(field.style.description_width) - INPUT_CHROME_EM
            needs = len(field.placeholder) * EM_PER_CHARACTER
            assert needs <= room, f"{key}: placeholder {field.placeholder!r} needs {needs}em, the field has {room}em"
    finally:
        widget.close()


class PlayedGitOpsService(JsonHandler):
    """The platform service's GitOps API as the widget's backend calls it: each PUT and DELETE a commit of its own."""

    commits: list[dict] = []
    files: dict[str, dict] = {}

    def do_PUT(self):
        self.change(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["object"])

    def do_DELETE(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.change(None)

    def change(self, document: dict | None) -> None:
        team, kind, name = urlparse(self.path).path.split("/")[-3:]
        path = f"teams/{team}/{kind}/{name}.yaml"
        sha = f"{len(self.commits) + 1:040x}"
        commit = {"sha": sha, "short": sha[:7], "branch": "main", "path": path, "author": "alice",
                  "message": f"{'Submit' if document else 'Cancel'} SparkApplication {team}/{name}",
                  "url": f"https://git.example.org/deploy/commit/{sha}", "change": "added", "time": None}
        self.commits.append({"authorization": self.headers["Authorization"], "object": document, **commit})
        self.answer(201 if document else 200, {"commit": commit, "waiting_for": "Argo CD to sync it"})


def test_in_gitops_mode_the_job_is_committed_first_and_the_widget_shows_the_commit(stand_in_spark, tmp_path,
                                                                                     monkeypatch):
    catalog = yaml.safe_load(DEFAULT_CATALOG.read_text())
    catalog["gitops"]["commit_url"] = "https://git.example.org/deploy/commit/{sha}"
    (tmp_path / "platform.yaml").write_text(yaml.safe_dump(catalog))
    PlayedGitOpsService.commits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlayedGitOpsService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name, value in {"MLPLATFORM_CATALOG": str(tmp_path / "platform.yaml"), "MLPLATFORM_TEAM": "team-vision",
                        "MLPLATFORM_USER": "alice", "JUPYTERHUB_API_TOKEN": "server-token",
                        "MLPLATFORM_SERVICE_URL": f"http://127.0.0.1:{server.server_port}/services/mlplatform"}.items():
        monkeypatch.setenv(name, value)
    widget = SubmitSparkJob(poll_interval=0.05)
    try:
        widget.fields["name"].value = "wordcount"
        widget.fields["main_file"].value = "wordcount.py"
        widget.submit_button.click()
        assert widget.wait(30) and widget.errors.lines == [] and widget.state == "COMPLETED"
        [commit] = PlayedGitOpsService.commits
        document = commit["object"]
        # The SparkApplication the Kubernetes backend would create, with the notebook's file as a local:// one.
        assert (document["kind"], document["metadata"]["name"], document["metadata"]["namespace"]) == (
            "SparkApplication", widget.app_id, "team-vision")
        assert document["spec"]["mainApplicationFile"] == f"local://{tmp_path / 'notebooks' / 'wordcount.py'}"
        assert commit["authorization"] == "token server-token"  # the server's own token; no Git credential
        assert widget.commit_line.sha == commit["sha"]
        assert widget.commit_line.value == (
            f'Git: commit <a href="https://git.example.org/deploy/commit/{commit["sha"]}" target="_blank" '
            f'rel="noopener" style="color:#1565c0"><code>{commit["sha"][:7]}</code></a> on <code>main</code> '
            f"(teams/team-vision/spark/{widget.app_id}.yaml) — Submit SparkApplication team-vision/{widget.app_id}")
    finally:
        widget.close()
        server.shutdown()
        server.server_close()
