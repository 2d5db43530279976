"""The job's own output taken out of a Spark driver log, on real text: a PySpark job (prints a count, then
a task fails with ZeroDivisionError) run with spark-submit 4.3, stdout and stderr read apart and written
in the order they came: `data/spark-driver-pod.log` is both streams in one, as a driver pod's log is
(runs of INFO lines and of Java stack frames shortened), `data/spark-driver-stdout.log` spark-submit's
stdout of the same run: the program's prints, warnings and traceback."""

from __future__ import annotations

from pathlib import Path

from mlplatform.spark.driver_log import LOG4J_RECORD, job_output

DATA = Path(__file__).with_name("data")
POD_LOG = (DATA / "spark-driver-pod.log").read_text().splitlines()
STDOUT = (DATA / "spark-driver-stdout.log").read_text().splitlines()


def test_the_pod_log_without_sparks_records_is_the_programs_stdout():
    assert job_output(POD_LOG) == STDOUT


def test_what_is_taken_out_is_sparks_own():
    assert sum(1 for line in POD_LOG if LOG4J_RECORD.match(line)) > 10
    assert not any(LOG4J_RECORD.match(line) for line in job_output(POD_LOG))
    # Spark quotes the failed task's Python traceback in its ERROR records; the program's own one stays.
    assert sum(line == "ZeroDivisionError: division by zero" for line in POD_LOG) > 1
    assert [line for line in job_output(POD_LOG) if "ZeroDivisionError" in line] == [
        "ZeroDivisionError: division by zero"]
    assert "rows: 3" in job_output(POD_LOG)


def test_text_without_spark_lines_is_left_as_it_is():
    lines = ["rows: 3", "  indented", "", "Traceback (most recent call last):", "ValueError: x"]
    assert job_output(lines) == lines
