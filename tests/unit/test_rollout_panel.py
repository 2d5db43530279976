"""The Rollout widget's live panel as HTML, from live reports as the platform service answers them."""

from __future__ import annotations

from mlplatform.widgets.rollout import sides_html


def live(mode: str, champion: int, candidate: int) -> dict:
    return {"mode": mode, "champion": {"model_version": "1", "requests": champion},
            "candidate": {"model_version": "2", "requests": candidate}, "agreement": None, "drift": None}


def test_shadow_says_how_many_of_the_champions_requests_were_mirrored():
    panel = sides_html(live("shadow", 4000, 3000))
    assert ("<div class='mlp-mirrored'>Mirrored: 3000 of the champion's 4000 requests (75.0 %): the rest were not "
            "mirrored (the mirror rate, or the candidate busy with 128 mirrors per replica)</div>") in panel


def test_every_request_mirrored_needs_no_excuse():
    panel = sides_html(live("shadow", 120, 120))
    assert "<div class='mlp-mirrored'>Mirrored: 120 of the champion's 120 requests (100.0 %)</div>" in panel


def test_canary_and_an_empty_window_show_no_mirror_line():
    assert "mlp-mirrored" not in sides_html(live("canary", 950, 50))  # in canary the sides split the callers
    assert "mlp-mirrored" not in sides_html(live("shadow", 0, 0))


def test_the_latencies_say_they_leave_the_warm_up_out():
    report = live("shadow", 120, 12)
    report["champion"]["warmup"], report["candidate"]["warmup"] = 20, 12
    assert ("<div class='mlp-warmup'>p50 and p99 leave out each side's first 20 answers of its version (a fresh "
            "replica's warm-up)</div>") in sides_html(report)
    assert "mlp-warmup" not in sides_html(live("shadow", 120, 120))  # a service without warm-up
