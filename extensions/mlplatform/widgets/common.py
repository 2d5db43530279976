"""What the three widgets share: red error lines, the background runner that keeps slow calls off the
kernel's thread, and the registered models as dropdown options."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable, Iterable

import ipywidgets as w

ERROR_COLOR = "#c62828"
OK_COLOR = "#2e7d32"
MAX_LINES = 20  # of one error (a failed Ray start carries its log tail)
WIDE = w.Layout(width="32em")
LABEL = {"description_width": "11em"}


def error_lines(error: BaseException) -> list[str]:
    """An API's exception as the lines a user reads: the message, never a traceback."""
    from ..serving.errors import InvalidServingRequest

    if isinstance(error, InvalidServingRequest):
        return [f"{field}: {message}" for field, message in error.problems]
    message = getattr(error, "message", None)  # RegistryError, MlflowException
    text = message if isinstance(message, str) and message else str(error)
    if not _expected(error):
        text = f"{type(error).__name__}: {text}"
    lines = [line for line in text.splitlines() if line.strip()] or [type(error).__name__]
    return lines[:MAX_LINES] + ([f"… {len(lines) - MAX_LINES} more lines"] if len(lines) > MAX_LINES else [])


def _expected(error: BaseException) -> bool:
    """Errors whose message is written for users (they name the field, value and what is allowed)."""
    from ..registry.errors import RegistryError
    from ..serving.errors import ServingError
    from ..spark.backend import SparkBackendError, UnknownApplicationError
    from ..spark.job import SparkJobError

    return isinstance(error, (ServingError, RegistryError, SparkJobError, SparkBackendError, UnknownApplicationError))


def lines_html(lines: Iterable[str], color: str) -> str:
    return "".join(f'<div style="color:{color};white-space:pre-wrap">{html.escape(line)}</div>' for line in lines)


def pre(text: str, max_height: str = "20em") -> str:
    """`text` in a scrolling <pre> (logs, answers)."""
    return (f'<pre style="max-height:{max_height};overflow:auto;margin:0;padding:4px;'
            f'background:var(--jp-layout-color2,#f5f5f5)">{html.escape(text)}</pre>')


def link(url: str) -> str:
    url = html.escape(url, quote=True)
    return f'<a href="{url}" target="_blank" rel="noopener" style="color:#1565c0">{url}</a>'


class CommitLine(w.HTML):
    """GitOps mode: the last commit a deploy, delete, submit or cancel made (its link when the repository has a web
    UI); empty outside GitOps mode. CSS class mlp-commit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_class("mlp-commit")
        self.sha = ""

    def show(self, commit: dict | None) -> None:
        if not commit:
            self.sha, self.value = "", ""
            return
        short = html.escape(commit.get("short") or commit.get("sha", "")[:7])
        sha = (f'<a href="{html.escape(commit["url"], quote=True)}" target="_blank" rel="noopener" '
               f'style="color:#1565c0"><code>{short}</code></a>') if commit.get("url") else f"<code>{short}</code>"
        subject = html.escape((commit.get("message") or "").splitlines()[0] if commit.get("message") else "")
        self.sha = commit.get("sha", "")
        self.value = (f"Git: commit {sha} on <code>{html.escape(commit.get('branch', ''))}</code> "
                      f"({html.escape(commit.get('path', ''))}){' — ' + subject if subject else ''}")


class ErrorLines(w.HTML):
    """Red lines inside a widget; `lines` holds the plain text (what tests and callers read)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lines: list[str] = []

    def show(self, lines: Iterable[str]) -> None:
        self.lines = list(lines)
        self.value = lines_html(self.lines, ERROR_COLOR)

    def show_error(self, error: BaseException) -> None:
        self.show(error_lines(error))

    def clear(self) -> None:
        self.show([])


class Background:
    """Named daemon threads for a widget's slow calls (deploys, polls, MLflow reads), so the kernel never
    waits; an exception becomes red lines through `on_error`. `stop()` ends pollers (`sleep` answers
    False from then on); `on_change` runs when a task starts or ends (to enable or disable buttons)."""

    def __init__(self, on_error: Callable[[BaseException], None], on_change: Callable[[], None] = lambda: None):
        self.stopping = threading.Event()
        self._on_error, self._on_change = on_error, on_change
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, name: str, fn: Callable, *args) -> threading.Thread:
        def guarded():
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 — every failure is shown in the widget
                self._on_error(e)
            finally:
                with self._lock:
                    if self._threads.get(name) is threading.current_thread():
                        del self._threads[name]
                self._on_change()

        thread = threading.Thread(target=guarded, name=f"mlplatform-widget-{name}", daemon=True)
        with self._lock:
            self._threads[name] = thread
        thread.start()
        self._on_change()
        return thread

    def running(self, *names: str) -> bool:
        with self._lock:
            return any(n in self._threads for n in names) if names else bool(self._threads)

    def sleep(self, seconds: float) -> bool:
        """Wait between polls; False once stopped."""
        return not self.stopping.wait(seconds)

    def wait(self, timeout: float | None = None) -> bool:
        """Until every task (also those started meanwhile) has ended; whether they did within `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [t for t in self._threads.values() if t is not threading.current_thread()]
            if not threads:
                return True
            for thread in threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    return not any(t.is_alive() for t in self._threads.values())

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.wait(timeout)


def close_tree(widget: w.Widget) -> None:
    """Close a widget and every widget inside it (a Box's close() leaves its children open)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    w.Widget.close(widget)


def on_click(button: w.Button, handler: Callable[[], None]) -> None:
    """Call `handler()` on a click, except while the button is disabled (a browser cannot click it then,
    `button.click()` can)."""
    button.on_click(lambda b: None if b.disabled else handler())


def version_label(version: str, aliases: dict[str, str]) -> str:
    held = [f"@{a}" for a, v in sorted(aliases.items()) if str(v) == str(version)]
    return f"version {version}" + (f" ({', '.join(held)})" if held else "")


def dns_label(text: str) -> str:
    """A default application name from a model name ('Iris_Classifier' → 'iris-classifier')."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    label = re.sub(r"^[^a-z]+", "", label)[:63]
    return label.rstrip("-") or "model"


def set_options(dropdown: w.Dropdown, options: list, keep: bool = True) -> None:
    """Replace a dropdown's options, keeping the selected value when it is still offered."""
    previous = dropdown.value
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    dropdown.options = options
    wanted = previous if keep and previous in values else (values[0] if values else None)
    if dropdown.value != wanted:
        dropdown.value = wanted
