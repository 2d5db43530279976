"""The trail of promotions from the platform's audit records, and where a rollback goes (mlplatform_service.trail)."""

import pytest

from mlplatform.registry.errors import RollbackRefused
from mlplatform_service.trail import events, holders, model_target, open_intents, rollback_target

GATES = [{"id": "accuracy >= 0.9", "kind": "metric", "passed": True}]


def intent(seq, action, version, previous, alias="champion", user="alice"):
    return {"seq": seq, "time": f"2026-01-01T00:00:{seq:02d}.000Z", "actor": user, "action": action,
            "team": "team-vision", "target": "model team-vision/iris", "outcome": "intent",
            "details": {"model": "iris", "version": version, "alias": alias, "previous_version": previous,
                        "gates": GATES if action == "promote" else None, "card_sha256": f"card-{version}"}}


def outcome(seq, of, result="succeeded", actor="alice"):
    return {"seq": seq, "time": f"2026-01-01T00:01:{seq:02d}.000Z", "actor": actor, "action": of["action"],
            "team": "team-vision", "target": of["target"], "outcome": result, "details": {"intent_seq": of["seq"]}}


def trail_of(*steps):
    """Audit records of promotions/rollbacks that all succeeded: (action, version, previous[, alias])."""
    records, seq = [], 0
    for step in steps:
        i = intent(seq + 1, *step)
        records += [i, outcome(seq + 2, i)]
        seq += 2
    return records


def event(seq, action, version, previous, alias="champion", user="alice"):
    return {"seq": seq, "action": action, "model": "iris", "team": "team-vision", "version": version, "alias": alias,
            "user": user, "time": f"2026-01-01T00:00:{seq:02d}.000Z", "previous_version": previous,
            "gates": GATES if action == "promote" else None, "card": f"card-{version}"}


def test_events_are_the_succeeded_intents():
    i1, i2, i3 = intent(1, "promote", "1", None), intent(3, "promote", "2", "1"), intent(5, "promote", "3", "1")
    refused = {**intent(7, "promote", "4", "1"), "outcome": "refused"}
    records = [i1, outcome(2, i1), i2, outcome(4, i2, "failed"), i3, refused]
    assert events(records) == [event(1, "promote", "1", None)]
    assert open_intents(records) == [i3]  # failed and refused are decided; i3 has no outcome yet


def test_a_settled_intent_counts_as_its_outcome_says():
    i1 = intent(1, "promote", "1", None)
    records = [i1, outcome(2, i1, actor="platform")]
    assert events(records) == [event(1, "promote", "1", None)]
    assert open_intents(records) == []


def test_rollback_pops_the_promotion_stack():
    trail = events(trail_of(("promote", "1", None), ("promote", "2", "1"), ("promote", "3", "2")))
    assert holders(trail, "champion") == ["1", "2", "3"]
    assert rollback_target(trail, "iris", "champion", "3") == "2"
    trail = events(trail_of(("promote", "1", None), ("promote", "2", "1"), ("promote", "3", "2"),
                            ("rollback", "2", "3")))
    assert holders(trail, "champion") == ["1", "2"]
    assert rollback_target(trail, "iris", "champion", "2") == "1"
    trail = events(trail_of(("promote", "1", None), ("promote", "2", "1"), ("rollback", "1", "2")))
    with pytest.raises(RollbackRefused) as refused:
        rollback_target(trail, "iris", "champion", "1")
    assert str(refused.value) == ("no previous @champion of 'iris' that the platform promoted: version 1 is the first "
                                  "version promoted to @champion; promote another version instead")


def test_re_promoted_version_and_other_aliases():
    trail = events(trail_of(("promote", "1", None), ("promote", "2", "1"), ("promote", "1", "2"),
                            ("promote", "5", None, "staging")))
    assert holders(trail, "champion") == ["1", "2", "1"]
    assert rollback_target(trail, "iris", "champion", "1") == "2"
    assert holders(trail, "staging") == ["5"]


def test_rollback_never_goes_to_a_version_the_platform_did_not_promote():
    # @champion pointed at version 4 before aliases were protected; the next promotion recorded it as the
    # previous holder. Version 4 never passed the platform's gates: a rollback skips it.
    trail = events(trail_of(("promote", "1", None), ("promote", "2", "4")))
    assert holders(trail, "champion") == ["1", "4", "2"]
    assert rollback_target(trail, "iris", "champion", "2") == "1"


def test_no_holder_no_rollback():
    with pytest.raises(RollbackRefused, match="^no version of 'iris' holds @champion: nothing to roll back; "
                                              "promote a version instead$"):
        rollback_target(events(trail_of(("promote", "1", None))), "iris", "champion", None)


def test_model_target_names_the_team():
    assert model_target("team-vision", "iris") == "model team-vision/iris"
    assert model_target(None, "iris") == "model iris"
