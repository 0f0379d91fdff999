"""The off-peak reload window: local wall-clock hours, days, midnight crossings and DST changes."""

from __future__ import annotations

import datetime as dt

import pytest

from gunicorn_cert_exporter.window import Window

UTC = dt.timezone.utc


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_inside_the_hours_on_an_allowed_day_is_open() -> None:
    window = Window.parse(between="02:00-05:00", timezone="UTC", days=["mon", "tue", "wed", "thu", "fri"])
    assert window.is_open(_at("2026-12-07T03:00:00"))  # a Monday
    assert not window.is_open(_at("2026-12-07T05:00:00"))  # the end is not inside
    assert not window.is_open(_at("2026-12-12T03:00:00"))  # a Saturday
    assert window.next_opening(_at("2026-12-11T06:00:00")) == _at("2026-12-14T02:00:00")  # Friday -> Monday


def test_a_range_across_midnight_belongs_to_the_day_it_opens_on() -> None:
    window = Window.parse(between="22:00-02:00", timezone="UTC", days=["fri"])
    assert window.is_open(_at("2026-12-11T23:30:00"))  # Friday night
    assert window.is_open(_at("2026-12-12T01:30:00"))  # still Friday's opening, on Saturday
    assert not window.is_open(_at("2026-12-12T23:30:00"))  # Saturday night is not Friday
    assert not window.is_open(_at("2026-12-11T01:30:00"))  # Thursday's night: no opening then


def test_every_day_when_days_are_not_given() -> None:
    window = Window.parse(between="02:00-05:00", timezone="UTC")
    assert window.next_opening(_at("2026-12-12T06:00:00")) == _at("2026-12-13T02:00:00")


def test_the_next_opening_across_the_autumn_dst_change_in_berlin() -> None:
    """Berlin leaves summer time on Sunday 2026-10-25 at 03:00 CEST; 02:00-03:00 happens twice that night.

    Computed by hand: Sunday 02:00 CEST (UTC+2, the first of the two) is 00:00 UTC; the following Monday's 02:00 is
    CET (UTC+1), 01:00 UTC.
    """
    window = Window.parse(between="02:00-05:00", timezone="Europe/Berlin", days=["sun", "mon"])
    friday_noon = _at("2026-10-23T10:00:00")
    assert window.next_opening(friday_noon) == _at("2026-10-25T00:00:00")
    assert window.is_open(_at("2026-10-25T03:30:00"))  # 04:30 CET, the window's local hours, after the change
    assert not window.is_open(_at("2026-10-25T04:00:00"))  # 05:00 CET: closed
    assert window.next_opening(_at("2026-10-25T05:00:00")) == _at("2026-10-26T01:00:00")


def test_the_spring_forward_gap_opens_at_the_instant_the_clock_jumps() -> None:
    """Berlin skips 02:00-03:00 on Sunday 2026-03-29: a 02:30 start is 01:30 UTC (03:30 CEST, fold=0)."""
    window = Window.parse(between="02:30-04:00", timezone="Europe/Berlin", days=["sun"])
    assert window.next_opening(_at("2026-03-28T12:00:00")) == _at("2026-03-29T01:30:00")


@pytest.mark.parametrize(
    ("between", "timezone", "days"),
    [
        ("2-5", "UTC", None),
        ("02:00", "UTC", None),
        ("02:00-05:00", "Mars/Olympus", None),
        ("02:00-05:00", "UTC", ["mo"]),
    ],
)
def test_bad_window_words_are_refused_with_a_reason(between: str, timezone: str, days: list[str] | None) -> None:
    with pytest.raises(ValueError, match=r"HH:MM|IANA|days"):
        Window.parse(between=between, timezone=timezone, days=days)
