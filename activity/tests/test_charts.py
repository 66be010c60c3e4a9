"""The chart geometry: scales that read at a glance, holes shown as holes."""

from datetime import date, datetime, timedelta, timezone

import pytest

from activity import charts

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (39, 50), (120, 200), (501, 1000)]
)
def test_the_scale_ends_at_a_round_number(value, top):
    assert charts.nice_ceiling(value) == top


def test_a_hole_in_the_samples_breaks_the_line_and_a_lone_sample_is_a_dot():
    points = [(START + timedelta(minutes=m), 2) for m in (0, 1, 2, 30)]
    chart = charts.line_chart(points, start=START, end=START + timedelta(minutes=40), gap=150, ticks=[], label="")
    first, lone = chart.line.split(" M")
    assert first.startswith("M0.0,") and first.count(" L") == 2
    assert lone == "750.0,0.0 L750.0,0.0"
    assert chart.area.count(" Z") == 2


def test_stacked_bars_give_the_busiest_rooms_a_colour_and_the_rest_one_together():
    day = date(2026, 1, 1)
    values = {day: {f"room-{n}": 10 + n for n in range(9)}}
    chart, legend = charts.stacked_bar_chart([day], values, ticks=[], label="", noun="messages")
    assert [series.name for series in legend] == [f"room-{n}" for n in (8, 7, 6, 5, 4, 3)] + ["3 other rooms"]
    assert legend[-1].total == 10 + 11 + 12
    assert len(chart.bars) == 7
    # Stacked from the bottom, without gaps or overlaps, up to the total.
    assert chart.bars[0].y + chart.bars[0].height == charts.HEIGHT
    for lower, upper in zip(chart.bars, chart.bars[1:]):
        assert upper.y + upper.height == pytest.approx(lower.y)
