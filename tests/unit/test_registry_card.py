"""The model card rendered from plain facts (mlplatform.registry.card): whole-markdown asserts."""

from mlplatform_core.catalog import Promotion
from mlplatform.registry.card import render_card, spec_type
from mlplatform.registry.gates import evaluate_gates

FACTS = {
    "model": "iris", "version": "3", "source": "models:/m-0123", "run_id": "r123",
    "tags": {"intended_use": "demo | tests"}, "model_tags": {"owner": "alice"},
    "metrics": {"loss": 0.2, "accuracy": 0.95}, "params": {"solver": "lbfgs", "C": "1.0"},
    "signature": {"inputs": [{"type": "double", "name": "x1", "required": True},
                             {"type": "string", "name": "note", "required": False}],
                  "outputs": [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}],
                  "params": [{"name": "top_k", "type": "long", "default": 3, "shape": None}]},
    "signature_problem": None,
    "run": {"run_id": "r123", "run_name": "brave-owl", "status": "FINISHED", "start_time": "2026-01-02T03:04:05+00:00",
            "user": "alice", "experiment_id": "7", "experiment_name": "team-vision",
            "url": "http://mlflow/#/runs/r123"},
    "datasets": [{"name": "toy", "digest": "abc123", "source_type": "local", "source": "/data/toy.csv",
                  "context": "training"}],
}
POLICY = Promotion(metric_gates=[{"metric": "accuracy", "op": ">=", "threshold": 0.92}], compare_with_champion=False)


def report(facts, policy=POLICY):
    return evaluate_gates(policy, model=facts["model"], version=facts["version"], metrics=facts["metrics"],
                          signature=facts["signature"], version_tags=facts["tags"], model_tags=facts["model_tags"])


def test_full_card():
    card = render_card(FACTS, report(FACTS), promoted_by="alice", promoted_at="2026-01-02T10:00:00+00:00",
                       previous_version="2")
    assert card == """\
# Model card: iris version 3

Promoted to `@champion` by alice at 2026-01-02T10:00:00+00:00. Previous `@champion`: version 2.

## Details

| field | value |
|---|---|
| intended_use | demo \\| tests |
| owner | alice |

## Lineage

- Registered model: `iris` version 3 (`models:/iris/3`)
- Model source: `models:/m-0123`
- Run: brave-owl `r123` (FINISHED, started 2026-01-02T03:04:05+00:00 by alice) — http://mlflow/#/runs/r123
- Experiment: team-vision (id 7)

## Training data

| name | context | digest | source type | source |
|---|---|---|---|---|
| toy | training | abc123 | local | /data/toy.csv |

## Signature

### Inputs

| name | type | required |
|---|---|---|
| x1 | double | yes |
| note | string | no |

### Outputs

| name | type | required |
|---|---|---|
| - | tensor int64 (-1) | yes |

### Parameters

| name | type | default |
|---|---|---|
| top_k | long | 3 |

## Parameters

| name | value |
|---|---|
| C | 1.0 |
| solver | lbfgs |

## Metrics

| name | value |
|---|---|
| accuracy | 0.95 |
| loss | 0.2 |

## Quality gates

| gate | result | detail |
|---|---|---|
| accuracy >= 0.92 | pass | accuracy is 0.95, needs >= 0.92 |
| signature present | pass | signature with 2 inputs and 1 outputs |
| model card: intended_use | pass | intended_use is set on the version |
| model card: owner | pass | owner is set on the registered model |
"""


def test_card_of_a_version_without_run_signature_or_gates():
    facts = {"model": "bare", "version": "1", "source": "/tmp/model", "run_id": None, "tags": {}, "model_tags": {},
             "metrics": {}, "params": {}, "signature": None,
             "signature_problem": "the version's MLmodel file could not be read: gone", "run": None, "datasets": []}
    policy = Promotion(compare_with_champion=False, require_signature=False, model_card_fields=[])
    card = render_card(facts, report(facts, policy), promoted_by="bob", promoted_at="T", previous_version=None)
    assert card == """\
# Model card: bare version 1

Promoted to `@champion` by bob at T. Previous `@champion`: none (first promotion).

## Details

None.

## Lineage

- Registered model: `bare` version 1 (`models:/bare/1`)
- Model source: `/tmp/model`
- Run: none (the version was registered without a run)

## Training data

No dataset inputs were logged with the run (`mlflow.log_input`).

## Signature

No signature. the version's MLmodel file could not be read: gone

## Parameters

No parameters were logged.

## Metrics

No metrics were logged.

## Quality gates

The policy has no gates.
"""


def test_spec_types():
    assert [spec_type(s) for s in (
        {"type": "long", "name": "n"},
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 28, 28]}},
        {"type": "array", "items": {"type": "string"}, "name": "tokens", "required": True},
    )] == ["long", "tensor float32 (-1, 28, 28)", '{"items": {"type": "string"}, "type": "array"}']
