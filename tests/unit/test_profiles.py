"""The profile pipeline: filtering by groups, availability text, disabled choices, re-validation."""

import pytest

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform_core.catalog import load_catalog
from hub_config.profiles import QuotaSnapshot, Selection, SelectionError, availability, select, spawn_choices

CATALOG = load_catalog(DEFAULT_CATALOG, environ={})
EMPTY = QuotaSnapshot(used={}, pool_free={"a100": 6, "t4": 2})


def labels(teams, team, profile):
    [t] = [t for t in teams if t.team == team]
    [p] = [p for p in t.profiles if p.slug == profile]
    return [(c.value, c.label, c.available) for c in p.gpu_choices]


def test_profiles_are_filtered_by_the_users_teams():
    assert [t.team for t in spawn_choices(CATALOG, ["team-vision"], EMPTY)] == ["team-vision"]
    assert [t.team for t in spawn_choices(CATALOG, ["/team-nlp", "/team-vision"], EMPTY)] == ["team-vision", "team-nlp"]
    assert spawn_choices(CATALOG, ["contractors"], EMPTY) == []


def test_profile_limited_to_one_team(tmp_path):
    text = open(CATALOG.path).read().replace(
        "teams: [team-vision, team-nlp]\n    gpu: {types: [a100]", "teams: [team-vision]\n    gpu: {types: [a100]")
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    catalog = load_catalog(path, environ={})
    [nlp] = spawn_choices(catalog, ["team-nlp"], EMPTY)
    assert [p.slug for p in nlp.profiles] == ["cpu", "gpu-t4"]
    with pytest.raises(SelectionError) as e:
        select(catalog, ["team-nlp"], EMPTY, {"profile": "gpu-a100"})
    assert (e.value.status, str(e.value)) == (403, "profile 'gpu-a100' is not available to team-nlp; allowed: cpu, gpu-t4")


def test_availability_text_with_free_quota():
    snapshot = QuotaSnapshot(used={"team-vision": {"a100": 1}}, pool_free={"a100": 5, "t4": 2})
    teams = spawn_choices(CATALOG, ["team-vision"], snapshot)
    assert labels(teams, "team-vision", "gpu-a100") == [
        ("a100:1", "A100 ×1 — 3 of 4 team-vision A100 free", True),
        ("a100:2", "A100 ×2 — 3 of 4 team-vision A100 free", True),
        ("a100:4", "A100 ×4 — only 3 of 4 team-vision A100 free", False),
    ]


def test_total_quota_limits_every_type():
    # team-vision: total 4; 3 A100 in use leaves 1 GPU in total, though 2 T4 of the T4 quota are free.
    snapshot = QuotaSnapshot(used={"team-vision": {"a100": 3}}, pool_free={"a100": 3, "t4": 2})
    teams = spawn_choices(CATALOG, ["team-vision"], snapshot)
    assert (teams[0].gpu_free, teams[0].gpu_total) == (1, 4)
    assert labels(teams, "team-vision", "gpu-t4") == [
        ("t4:1", "T4 ×1 — 1 of 2 team-vision T4 free", True),
        ("t4:2", "T4 ×2 — only 1 of 4 team-vision GPUs free in total", False),
    ]


def test_pool_on_this_machine_limits_choices():
    snapshot = QuotaSnapshot(used={"team-nlp": {"t4": 1}}, pool_free={"a100": 6, "t4": 0})
    teams = spawn_choices(CATALOG, ["team-vision"], snapshot)
    assert labels(teams, "team-vision", "gpu-t4")[0] == ("t4:1", "T4 ×1 — only 0 T4 left on this machine", False)
    [vision] = teams
    assert [p.available for p in vision.profiles] == [True, True, False]


def test_team_without_quota_for_a_type():
    avail = availability(CATALOG, EMPTY, "team-nlp", "a100")
    assert (avail.type_quota, avail.free) == (1, 1)
    teams = spawn_choices(CATALOG, ["team-nlp"], EMPTY)
    assert labels(teams, "team-nlp", "gpu-a100")[1] == ("a100:2", "A100 ×2 — only 1 of 1 team-nlp A100 free", False)


def test_select_defaults_for_a_single_team_user():
    assert select(CATALOG, ["team-vision"], EMPTY, {}) == Selection("team-vision", "cpu")
    assert select(CATALOG, ["team-vision"], EMPTY, {"profile": "gpu-a100"}) == Selection(
        "team-vision", "gpu-a100", "a100", 1)
    assert select(CATALOG, ["team-vision"], EMPTY, {"profile": "gpu-a100", "gpu_count": "4"}) == Selection(
        "team-vision", "gpu-a100", "a100", 4)


@pytest.mark.parametrize(("groups", "options", "status", "message"), [
    (["team-vision", "team-nlp"], {"profile": "cpu"}, 400,
     "you are in several teams: choose one with 'team'; allowed: team-vision, team-nlp"),
    (["team-vision"], {"team": "team-nlp"}, 403, "team 'team-nlp' is not one of your teams; allowed: team-vision"),
    (["contractors"], {}, 403, "you are not a member of any team of this platform; allowed groups: team-vision, "
                              "team-nlp. Ask a platform administrator to add you to one."),
    (["team-vision"], {"profile": "huge"}, 403,
     "profile 'huge' is not available to team-vision; allowed: cpu, gpu-a100, gpu-t4"),
    (["team-vision"], {"profile": "gpu-a100", "gpu_count": 3}, 400,
     "gpu_count 3 is not offered by profile 'gpu-a100'; allowed: 1, 2, 4"),
    (["team-vision"], {"profile": "gpu-a100", "gpu_count": "²"}, 400,  # a digit to str.isdigit, not to int()
     "gpu_count '²' is not offered by profile 'gpu-a100'; allowed: 1, 2, 4"),
    (["team-vision"], {"profile": "gpu-a100", "gpu_type": "t4"}, 400,
     "gpu_type 't4' is not offered by profile 'gpu-a100'; allowed: a100"),
    (["team-vision"], {"profile": "cpu", "gpu_count": 1}, 400,
     "profile 'cpu' has no GPUs; leave gpu_type and gpu_count out"),
    (["team-vision"], {"image": "evil"}, 400,
     "unknown option 'image'; allowed options: team, profile, gpu_type, gpu_count"),
])
def test_select_refuses_with_what_is_allowed(groups, options, status, message):
    with pytest.raises(SelectionError) as e:
        select(CATALOG, groups, EMPTY, options)
    assert (e.value.status, str(e.value)) == (status, message)


def test_select_refuses_beyond_free_quota_and_says_what_fits():
    snapshot = QuotaSnapshot(used={"team-vision": {"a100": 3}}, pool_free={"a100": 3, "t4": 2})
    with pytest.raises(SelectionError) as e:
        select(CATALOG, ["team-vision"], snapshot, {"profile": "gpu-a100", "gpu_count": 2})
    assert e.value.status == 409
    assert str(e.value) == ("cannot start with 2 A100 GPUs: only 1 of 4 team-vision A100 free; "
                            "counts you can take now: 1")
