"""The Prometheus exposition of usage and budgets, parsed back with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mlplatform_service.budgets import Budgets
from mlplatform_service.metrics import exposition

from .test_usage_ledger import Setup, catalog_with, server, utc


def samples(body: bytes) -> set[tuple]:
    return {(s.name, tuple(sorted(s.labels.items())), s.value)
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_the_exposition_reports_allocations_usage_and_budgets(tmp_path):
    s = Setup(f"sqlite:///{tmp_path}/platform.sqlite", utc(2026, 12, 7, 10),
              catalog_with({"team-vision": {"gpu_hours": 100, "cost": 200}}))
    ledger = s.ledger
    server(ledger, "alice", gpus=2, at=utc(2026, 12, 7, 6))                       # 8 GPU-hours, $20
    server(ledger, "bob", gpus=1, gpu_type="t4", at=utc(2026, 12, 7, 8))          # 2 GPU-hours, $1
    ledger.open("model:team-vision/iris", kind="model", team="team-vision", user="bob", gpu_type="a100", gpus=2,
                model="iris", at=utc(2026, 12, 7, 9))                             # 2 GPU-hours, $5
    server(ledger, "carol", gpus=0, gpu_type=None)                                # CPU only: no GPUs
    server(ledger, "dave", gpus=1, team="team-nlp", at=utc(2026, 11, 30, 22))     # 154 in December, $385
    body, content_type = exposition(ledger, Budgets(ledger))
    assert content_type.startswith("text/plain; version=")
    assert samples(body) == {
        ("mlplatform_gpus_allocated", (("gpu_type", "a100"), ("kind", "model"), ("team", "team-vision")), 2.0),
        ("mlplatform_gpus_allocated", (("gpu_type", "a100"), ("kind", "server"), ("team", "team-nlp")), 1.0),
        ("mlplatform_gpus_allocated", (("gpu_type", "a100"), ("kind", "server"), ("team", "team-vision")), 2.0),
        ("mlplatform_gpus_allocated", (("gpu_type", "t4"), ("kind", "server"), ("team", "team-vision")), 1.0),
        ("mlplatform_gpu_hours_used", (("period", "2026-12"), ("team", "team-vision")), 12.0),
        ("mlplatform_gpu_hours_used", (("period", "2026-12"), ("team", "team-nlp")), 154.0),
        ("mlplatform_cost_used", (("currency", "USD"), ("period", "2026-12"), ("team", "team-vision")), 26.0),
        ("mlplatform_cost_used", (("currency", "USD"), ("period", "2026-12"), ("team", "team-nlp")), 385.0),
        ("mlplatform_budget_gpu_hours", (("period", "2026-12"), ("team", "team-vision")), 100.0),
        ("mlplatform_budget_cost", (("currency", "USD"), ("period", "2026-12"), ("team", "team-vision")), 200.0),
        ("mlplatform_budget_used_ratio", (("team", "team-vision"),), 0.13),
    }


def test_a_weekly_budget_is_reported_for_its_week_and_a_released_allocation_is_gone(tmp_path):
    s = Setup(f"sqlite:///{tmp_path}/platform.sqlite", utc(2026, 12, 7, 10),
              catalog_with({"team-nlp": {"gpu_hours": 10, "period": "week"}}))
    ledger = s.ledger
    budgets = Budgets(ledger)
    budgets.admit("server:dave/", kind="server", team="team-nlp", user="dave", gpu_type="t4", gpus=1,
                  at=utc(2026, 12, 6, 10))  # 14 hours in week 49, 10 in week 50
    budgets.release("server:dave/", at=utc(2026, 12, 7, 10))
    assert samples(exposition(ledger, budgets)[0]) == {
        ("mlplatform_gpu_hours_used", (("period", "2026-12"), ("team", "team-vision")), 0.0),
        ("mlplatform_gpu_hours_used", (("period", "2026-W50"), ("team", "team-nlp")), 10.0),
        ("mlplatform_cost_used", (("currency", "USD"), ("period", "2026-12"), ("team", "team-vision")), 0.0),
        ("mlplatform_cost_used", (("currency", "USD"), ("period", "2026-W50"), ("team", "team-nlp")), 5.0),
        ("mlplatform_budget_gpu_hours", (("period", "2026-W50"), ("team", "team-nlp")), 10.0),
        ("mlplatform_budget_used_ratio", (("team", "team-nlp"),), 1.0),
    }
