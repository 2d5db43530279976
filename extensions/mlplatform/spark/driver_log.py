"""The job's own output in a Spark driver log: what is left when Spark's log4j records are taken out.

A PySpark driver's log mixes two streams: Spark's log4j records (`26/12/02 07:54:06 INFO DAGScheduler:
...`, on spark-submit's stderr) and the Python program's stdout and stderr (its prints, warnings and
tracebacks, which spark-submit passes to its stdout). The local backend keeps spark-submit's stdout
apart; a driver pod's log is both streams in one, so `job_output` takes the log4j records out of it.

A record is its first line and the lines that belong to it: a Java exception and its stack frames
(`\tat ...`, `Caused by: ...`, `... 12 more`), and a Python traceback Spark quotes in a message (after
"Traceback (most recent call last):", indented lines up to the exception line). Spark's launcher
lines (`Using Spark's default log4j profile: ...`, the console progress bar) go too. Pure functions.
"""

from __future__ import annotations

import re

# log4j's timestamp (Spark's default `yy/MM/dd HH:mm:ss`, or ISO dates) then the level.
LOG4J_RECORD = re.compile(r"^(?:\d{2}/\d{2}/\d{2}|\d{4}-\d{2}-\d{2})[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\s+"
                          r"(?:TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL)\s")
SPARK_LINE = re.compile(r"^(?:WARNING: Using incubator modules: |Using Spark's default log4j profile: |"
                        r"Setting default log level to |To adjust logging level use sc\.setLogLevel|"
                        r"\[Stage \d+:.*\]\s*$)")
JAVA_EXCEPTION = re.compile(r"^[a-z][\w$]*(?:\.[\w$]+)+(?:Exception|Error|Throwable)\b")
JAVA_FRAME = re.compile(r"^(?:\s+at \S|\s+\.\.\. \d+ more|(?:Caused by|Suppressed): )")
TRACEBACK = "Traceback (most recent call last):"


def job_output(lines: list[str]) -> list[str]:
    """`lines` of a driver log without Spark's log4j records (with their continuation lines) and
    launcher lines: the Python program's own output."""
    out: list[str] = []
    state = None  # inside a record: "exception" (a Java exception may follow), "traceback", "frames"
    for line in lines:
        if LOG4J_RECORD.match(line):
            state = "traceback" if line.rstrip().endswith(TRACEBACK) else "exception"
            continue
        if state is not None:
            state = _continues(state, line)
            if state is not None:
                continue
        if not SPARK_LINE.match(line):
            out.append(line)
    return out


def _continues(state: str, line: str) -> str | None:
    """The record's state after `line` when `line` belongs to the record; None when it does not."""
    opens_traceback = line.rstrip().endswith(TRACEBACK)
    if state == "traceback":  # indented frames, then the exception line
        return "traceback" if line[:1].isspace() else "frames"
    if JAVA_EXCEPTION.match(line) or JAVA_FRAME.match(line):
        return "traceback" if opens_traceback else "frames"
    if state == "frames" and (line[:1].isspace() or not line.strip()):  # " SQLSTATE: ...", a closing blank
        return "frames"
    return None
