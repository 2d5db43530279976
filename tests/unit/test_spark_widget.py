"""SubmitSparkJob's rough edges (issue 13): the job's own output apart from Spark's log4j lines, and placeholders
that fit their fields. The job runs on the local backend as a real process: a shell script stands in for
spark-submit (log4j records on stderr, the program's prints on stdout, as spark-submit runs PySpark); the real
spark-submit runs in tests/integration/test_widgets.py."""

from __future__ import annotations

import re
import textwrap

import ipywidgets as w
import pytest

from mlplatform.spark import api as spark_api
from mlplatform.spark import local as spark_local
from mlplatform.spark.driver_log import LOG4J_RECORD
from mlplatform.widgets import SubmitSparkJob

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
