"""Prometheus metrics of GPU usage and budgets, read from the ledger at each scrape (no state of their own).

    mlplatform_gpus_allocated{team,kind,gpu_type}        GPUs of the open allocations
    mlplatform_gpu_hours_used{team,period}               GPU-hours used in the team's budget period so far
    mlplatform_cost_used{team,period,currency}           their cost
    mlplatform_budget_gpu_hours{team,period}             the GPU-hour budget (teams that set one)
    mlplatform_budget_cost{team,period,currency}         the cost budget (teams that set one)
    mlplatform_budget_used_ratio{team}                   used / budget, the larger of the two (teams with a budget)

`period` is "2026-12" (a month) or "2026-W49" (an ISO week); teams without a budget count by month.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .budgets import Budgets
from .usage import UsageLedger


class UsageCollector:
    """A custom collector: each scrape asks the ledger, so every hub replica reports the same numbers."""

    def __init__(self, ledger: UsageLedger, budgets: Budgets):
        self.ledger = ledger
        self.budgets = budgets

    def collect(self):
        allocated = GaugeMetricFamily("mlplatform_gpus_allocated", "GPUs of the running allocations",
                                      labels=["team", "kind", "gpu_type"])
        gpus: dict[tuple[str, str, str], int] = {}
        for a in self.ledger.open_allocations():
            if a.gpus:
                labels = (a.team, a.kind, a.gpu_type)
                gpus[labels] = gpus.get(labels, 0) + a.gpus
        for labels, count in sorted(gpus.items()):
            allocated.add_metric(list(labels), count)
        yield allocated

        hours = GaugeMetricFamily("mlplatform_gpu_hours_used", "GPU-hours used in the budget period so far",
                                  labels=["team", "period"])
        cost = GaugeMetricFamily("mlplatform_cost_used", "Cost of the GPU-hours used in the budget period so far",
                                 labels=["team", "period", "currency"])
        budget_hours = GaugeMetricFamily("mlplatform_budget_gpu_hours", "The team's GPU-hour budget per period",
                                         labels=["team", "period"])
        budget_cost = GaugeMetricFamily("mlplatform_budget_cost", "The team's cost budget per period",
                                        labels=["team", "period", "currency"])
        ratio = GaugeMetricFamily("mlplatform_budget_used_ratio",
                                  "Used / budget in the current period (the larger of GPU-hours and cost)",
                                  labels=["team"])
        for s in self.budgets.statuses():
            hours.add_metric([s.team, s.period_id], s.used_gpu_hours)
            cost.add_metric([s.team, s.period_id, s.currency], s.used_cost)
            if s.budget_gpu_hours is not None:
                budget_hours.add_metric([s.team, s.period_id], s.budget_gpu_hours)
            if s.budget_cost is not None:
                budget_cost.add_metric([s.team, s.period_id, s.currency], s.budget_cost)
            if s.fraction is not None:
                ratio.add_metric([s.team], s.fraction)
        yield from (hours, cost, budget_hours, budget_cost, ratio)


def exposition(ledger: UsageLedger, budgets: Budgets) -> tuple[bytes, str]:
    """The metrics in Prometheus' text format and its content type (for the service's /metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector(ledger, budgets))
    return generate_latest(registry), CONTENT_TYPE_LATEST
