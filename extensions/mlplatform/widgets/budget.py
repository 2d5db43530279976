"""BudgetLine: the team's GPU budget as the platform service counts it, shown above ServeModel and
SubmitSparkJob ("Budget: team-vision: 412 of 500 GPU-hours used in December"). Read in the background;
empty outside the platform or for a team without a budget, amber from the warning threshold, red once
exceeded."""

from __future__ import annotations

import html
import logging
import threading

import ipywidgets as w

from .. import platform_service
from .common import ERROR_COLOR

log = logging.getLogger(__name__)
WARNING_COLOR = "#8a6d3b"


class BudgetLine(w.HTML):
    def __init__(self, team: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.team = team
        self.status: dict | None = None
        self.add_class("mlp-budget")
        self._done = threading.Event()
        self.refresh()

    def refresh(self) -> None:
        self._done.clear()
        threading.Thread(target=self._load, daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _load(self) -> None:
        try:
            self.status = platform_service.budget(self.team)
        except platform_service.NotOnPlatform:
            self.status = None
        except Exception as e:  # the budget is information here: the service refuses what it must itself
            log.warning("no budget line: %s: %s", type(e).__name__, e)
            self.status = None
        finally:
            self.value = self._html(self.status)
            self._done.set()

    @staticmethod
    def _html(status: dict | None) -> str:
        if not status or not status.get("has_budget"):
            return ""
        color = ERROR_COLOR if status.get("exceeded") else WARNING_COLOR if status.get("warning") else "#555"
        return f'<span style="color:{color}">Budget: {html.escape(status["line"])}</span>'
