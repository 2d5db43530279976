"""The audit trail as version tags, and which version a rollback returns to (mlplatform.registry.audit)."""

import json

import pytest

from mlplatform.registry.audit import (event_tags, events_from_tags, holders, make_event, next_seq,
                                       rollback_target)
from mlplatform.registry.errors import RollbackRefused

GATES = [{"id": "accuracy >= 0.9", "kind": "metric", "passed": True}]


def event(seq, action, version, previous, alias="champion"):
    return make_event(seq, action, model="iris", version=version, alias=alias, user="alice",
                      time=f"2026-01-01T00:00:0{seq}+00:00", previous_version=previous,
                      gates=GATES if action == "promote" else None)


def test_event_as_tags():
    e = make_event(7, "promote", model="iris", version=3, alias="champion", user="alice",
                   time="2026-01-01T00:00:00+00:00", previous_version=2, gates=GATES,
                   card="runs:/r/model_card/iris-v3.md")
    assert e == {"seq": 7, "action": "promote", "model": "iris", "version": "3", "alias": "champion", "user": "alice",
                 "time": "2026-01-01T00:00:00+00:00", "previous_version": "2", "gates": GATES,
                 "card": "runs:/r/model_card/iris-v3.md"}
    tags = event_tags(e)
    assert tags == {
        "mlplatform.promotion.action": "promote",
        "mlplatform.promotion.user": "alice",
        "mlplatform.promotion.time": "2026-01-01T00:00:00+00:00",
        "mlplatform.promotion.alias": "champion",
        "mlplatform.promotion.previous_version": "2",
        "mlplatform.promotion.gates": '[{"id":"accuracy >= 0.9","kind":"metric","passed":true}]',
        "mlplatform.model_card": "runs:/r/model_card/iris-v3.md",
        "mlplatform.audit.000007": json.dumps(e, sort_keys=True, separators=(",", ":")),
    }
    assert list(tags)[-1] == "mlplatform.audit.000007"  # written last: a failure part-way leaves no event


def test_rollback_and_first_promotion_tags():
    tags = event_tags(event(1, "rollback", "1", None))
    assert {k: v for k, v in tags.items() if not k.startswith("mlplatform.audit.")} == {
        "mlplatform.promotion.action": "rollback", "mlplatform.promotion.user": "alice",
        "mlplatform.promotion.time": "2026-01-01T00:00:01+00:00", "mlplatform.promotion.alias": "champion",
        "mlplatform.promotion.previous_version": "none", "mlplatform.promotion.gates": "null"}


def test_trail_from_the_tags_of_every_version():
    e1, e2, e3 = event(1, "promote", "1", None), event(2, "promote", "2", "1"), event(3, "rollback", "1", "2")
    by_version = [{**event_tags(e1), **event_tags(e3), "owner": "alice"},
                  {**event_tags(e2), "mlplatform.audit.000009": "not json"}]
    trail = events_from_tags(by_version)
    assert trail == [e1, e2, e3]
    assert next_seq(trail) == 4
    assert next_seq([]) == 1


def test_rollback_pops_the_promotion_stack():
    trail = [event(1, "promote", "1", None), event(2, "promote", "2", "1"), event(3, "promote", "3", "2")]
    assert holders(trail, "champion") == ["1", "2", "3"]
    assert rollback_target(trail, "iris", "champion", "3") == "2"
    trail.append(event(4, "rollback", "2", "3"))
    assert holders(trail, "champion") == ["1", "2"]
    assert rollback_target(trail, "iris", "champion", "2") == "1"
    trail.append(event(5, "rollback", "1", "2"))
    with pytest.raises(RollbackRefused) as refused:
        rollback_target(trail, "iris", "champion", "1")
    assert str(refused.value) == ("no previous @champion of 'iris' in the audit trail: version 1 is the first version "
                                  "promoted to @champion; promote another version instead")


def test_re_promoted_version_and_other_aliases():
    trail = [event(1, "promote", "1", None), event(2, "promote", "2", "1"), event(3, "promote", "1", "2"),
             event(4, "promote", "5", None, alias="staging")]
    assert holders(trail, "champion") == ["1", "2", "1"]
    assert rollback_target(trail, "iris", "champion", "1") == "2"
    assert holders(trail, "staging") == ["5"]


def test_alias_moved_outside_the_trail():
    # Someone pointed @champion at version 4 by hand; the next promotion recorded it as the previous holder.
    trail = [event(1, "promote", "1", None), event(2, "promote", "2", "4")]
    assert holders(trail, "champion") == ["1", "4", "2"]
    assert rollback_target(trail, "iris", "champion", "2") == "4"
    # And by hand again, to version 7: rolling back returns to the trail's last holder.
    assert rollback_target(trail, "iris", "champion", "7") == "2"


def test_no_holder_no_rollback():
    with pytest.raises(RollbackRefused, match="^no version of 'iris' holds @champion: nothing to roll back; "
                                              "promote a version instead$"):
        rollback_target([event(1, "promote", "1", None)], "iris", "champion", None)
