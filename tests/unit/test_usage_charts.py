"""The usage page's SVG charts: parsed back as XML, bars measured, every user-chosen text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mlplatform_service.usage_charts import PALETTE, bucket_label, nice_ceiling, stacked_bars, stacks

from .test_usage_ledger import utc

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def bars(root: ET.Element) -> list[dict]:
    """Each bar segment (not the legend's swatches): position, size, colour and tooltip."""
    out = []
    for rect in root.iter(f"{SVG}rect"):
        title = rect.find(f"{SVG}title")
        if title is not None:
            out.append({"x": float(rect.get("x")), "y": float(rect.get("y")), "height": float(rect.get("height")),
                        "fill": rect.get("fill"), "title": title.text})
    return out


def test_series_points_pivot_into_one_row_of_buckets_per_name():
    starts = [utc(2026, 12, 1), utc(2026, 12, 2), utc(2026, 12, 3)]
    points = [
        {"start": utc(2026, 12, 1), "team": "team-vision", "gpu_hours": 4.0, "cost": 10.0},
        {"start": utc(2026, 12, 3), "team": "team-vision", "gpu_hours": 1.5, "cost": 3.75},
        {"start": utc(2026, 12, 2), "team": "team-nlp", "gpu_hours": 2.0, "cost": 5.0},
        {"start": utc(2026, 12, 2), "team": None, "gpu_hours": 1.0, "cost": 1.0},
    ]
    assert stacks(points, starts, "team") == {"(none)": [0.0, 1.0, 0.0], "team-nlp": [0.0, 2.0, 0.0],
                                              "team-vision": [4.0, 0.0, 1.5]}
    with pytest.raises(ValueError, match="in none of the 3 buckets"):
        stacks([{"start": utc(2026, 12, 9), "team": "x", "gpu_hours": 1.0}], starts, "team")


@pytest.mark.parametrize(("value", "expected"), [
    (0, (1.0, 0.25)), (3, (3.0, 1.0)), (4.2, (5.0, 1.0)), (9, (10.0, 2.0)), (38, (40.0, 10.0)),
    (412, (500.0, 100.0)), (1000, (1000.0, 200.0)), (0.3, (0.3, 0.1)), (7.5, (8.0, 2.0))])
def test_the_axis_ends_at_a_round_number_in_3_to_5_steps(value, expected):
    top, step = nice_ceiling(value)
    assert (top, step) == (pytest.approx(expected[0]), pytest.approx(expected[1]))
    assert top >= value and 3 <= round(top / step) <= 5


def test_stacked_bars_are_proportional_coloured_per_name_and_explained_by_tooltips():
    svg = stacked_bars(["Dec 1", "Dec 2"], {"team-nlp": [0.0, 2.0], "team-vision": [4.0, 2.0]},
                       title="GPU-hours per day", width=600, height=300)
    root = parse(svg)
    assert root.find(f"{SVG}title").text == "GPU-hours per day"
    segments = bars(root)
    assert [(s["title"], s["fill"]) for s in segments] == [
        ("team-vision, Dec 1: 4 GPU-hours", PALETTE[1]),
        ("team-nlp, Dec 2: 2 GPU-hours", PALETTE[0]),
        ("team-vision, Dec 2: 2 GPU-hours", PALETTE[1])]
    # The axis tops at 4 (the largest bar): both bars are as tall as the plot, Dec 2's halves equal.
    full = segments[0]["height"]
    assert full == pytest.approx(300 - 32 - 28)
    assert segments[1]["height"] == pytest.approx(full / 2) == pytest.approx(segments[2]["height"])
    assert segments[2]["y"] + segments[2]["height"] == pytest.approx(segments[1]["y"])  # stacked, no gap
    legend = [" ".join(g.itertext()).strip() for g in root.iter(f"{SVG}g")]
    assert legend == ["team-nlp (2)", "team-vision (6)"]
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"Dec 1", "Dec 2", "0", "1", "2", "3", "4", "GPU-hours"} <= texts
    assert "No GPU-hours in this period" not in texts


def test_names_and_labels_are_escaped():
    svg = stacked_bars(['<script>alert("x")</script>'], {"a&b <img src=x onerror=y>": [1.0]},
                       title='"quoted" & <b>bold</b>')
    assert "<script>" not in svg and "<img" not in svg and "<b>" not in svg
    root = parse(svg)
    assert root.find(f"{SVG}title").text == '"quoted" & <b>bold</b>'  # escaped text, the same words
    assert bars(root)[0]["title"] == 'a&b <img src=x onerror=y>, <script>alert("x")</script>: 1 GPU-hours'


def test_an_empty_period_draws_the_axis_and_says_so():
    root = parse(stacked_bars(["Dec 1", "Dec 2"], {}, title="nothing"))
    assert bars(root) == []
    assert "No GPU-hours in this period" in {t.text for t in root.iter(f"{SVG}text")}


def test_many_buckets_thin_their_labels_and_widen_the_legend():
    labels = [f"d{i}" for i in range(60)]
    series = {f"team-{n}": [1.0] * 60 for n in range(6)}
    root = parse(stacked_bars(labels, series, title="t", width=880, height=300))
    shown = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.startswith("d")]
    assert shown[0] == "d0" and 5 <= len(shown) <= 13  # about one label per 64 px of an 800 px plot
    assert len(bars(root)) == 360
    assert int(root.get("height")) == 300 + 2 * 20  # 4 legend items a row: two rows


def test_values_per_label_must_match():
    with pytest.raises(ValueError, match="series 'x' has 1 values for 2 labels"):
        stacked_bars(["a", "b"], {"x": [1.0]}, title="t")


def test_bucket_labels():
    assert bucket_label(utc(2026, 12, 7), "day") == "Dec 7"
    assert bucket_label(utc(2026, 12, 7), "week") == "W50 Dec 7"


def test_a_names_colour_can_be_fixed():
    root = parse(stacked_bars(["Dec 1"], {"team-nlp": [1.0], "team-vision": [2.0]}, title="t",
                              colours={"team-vision": "#0072B2", "team-nlp": 'x" onload="y'}))
    assert [s["fill"] for s in bars(root)] == ['x" onload="y', "#0072B2"]  # escaped: an attribute, not markup
    assert "onload=" not in "".join(a for r in root.iter() for a in r.attrib)
