"""A team's traffic map as its gateway reads it (mlplatform_service/traffic_maps.py `parsed`): whatever the
ConfigMap holds, an entry either becomes a checked Traffic of the gateway's own team, whose map line HAProxy takes
as one entry, or is left out with the reason (its endpoint's champion then answers everything)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlplatform.serving.gateway import Traffic
from mlplatform.serving.rollout import rollout

from mlplatform_service.traffic_maps import parsed

TEAM = "team-vision"
CANARY = Traffic(team=TEAM, champion_version="3", candidate_version="4",
                 rollout=rollout(mode="canary", share=0.05, since=1.5, reason="raised by bob"), sample_rate=0.5)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=8)


def test_an_entry_comes_back_as_written_and_bad_ones_are_left_out_with_why():
    data = {"iris": json.dumps(CANARY.to_dict()), "iris2": "{not json", "other": json.dumps({**CANARY.to_dict(),
            "team": "team-nlp"}), "bad-share": json.dumps({**CANARY.to_dict(), "rollout": {"mode": "canary",
                                                                                     "share": 7}}),
            "Iris\n": json.dumps(CANARY.to_dict())}
    found, problems = parsed(data, TEAM)
    assert found == {"iris": CANARY}
    assert sorted(problems) == [
        "Iris\n: endpoint: 'Iris\\n' is not an endpoint name; allowed: a DNS label",
        "bad-share: share: 7 is not a canary share; allowed: a number above 0, at most 1 (e.g. 0.05 for 5 %)",
        "iris2: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "other: the traffic of team 'team-nlp', not 'team-vision''s"]
    assert parsed(None, TEAM) == ({}, [])


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.dictionaries(TEXT | st.just("iris"), (JSON | st.fixed_dictionaries(
    {"team": TEXT | st.just(TEAM), "champion_version": TEXT | st.just("3"), "candidate_version": st.none() | TEXT,
     "rollout": JSON | st.fixed_dictionaries({"mode": TEXT | st.sampled_from(["shadow", "canary", "off"]),
                                              "share": JSON, "mirror_rate": JSON}),
     "sample_rate": JSON})).map(json.dumps) | TEXT, max_size=4))
def test_no_entry_gets_into_the_gateway_unchecked(data):
    found, problems = parsed(data, TEAM)
    assert len(found) + len(problems) == len(data)
    for endpoint, traffic in found.items():
        line = f"{endpoint} {traffic.entry()}"  # what Gateway.set sends: one map entry, nothing more
        assert traffic.team == TEAM and line.count(" ") == 1 and line.count("|") == 6 and "\n" not in line
