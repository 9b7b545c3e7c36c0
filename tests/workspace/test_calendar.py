"""The working calendar the SLA counts in: weekends, the end of the day, holidays and make-up days."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from tests.workspace.conftest import at
from workspace.calendar import calendar_build, dates_check

CAL = calendar_build(
    timezone="Asia/Shanghai",
    start=time(9),
    end=time(18),
    weekdays="1,2,3,4,5",
    holidays="2026-10-01\n2026-10-02\n2026-10-05\n2026-10-06\n2026-10-07",
    extra_workdays="2026-09-27\n2026-10-10",
)
FOUR = timedelta(hours=4)


@pytest.mark.parametrize(
    ("assigned", "due"),
    [
        ("2026-12-07 10:00", "2026-12-07 14:00"),  # Monday morning: the same afternoon
        ("2026-12-07 16:00", "2026-12-08 11:00"),  # two hours left today, two tomorrow
        ("2026-12-11 16:00", "2026-12-14 11:00"),  # Friday afternoon: Monday morning
        ("2026-12-12 10:00", "2026-12-14 13:00"),  # Saturday: the clock starts Monday 09:00
        ("2026-12-07 07:30", "2026-12-07 13:00"),  # before opening: from 09:00
        ("2026-12-07 20:00", "2026-12-08 13:00"),  # after closing: from tomorrow 09:00
        ("2026-09-30 15:00", "2026-10-08 10:00"),  # the National Day holiday is not counted
        ("2026-09-26 10:00", "2026-09-27 13:00"),  # a Saturday before a make-up Sunday (调休)
    ],
)
def test_four_working_hours(assigned, due):
    assert CAL.add_working_time(at(assigned), FOUR) == at(due)


def test_working_time_between_skips_nights_and_weekends():
    assert CAL.working_time_between(at("2026-12-11 16:00"), at("2026-12-14 11:00")) == FOUR
    assert CAL.working_time_between(at("2026-12-14 11:00"), at("2026-12-11 16:00")) == -FOUR


def test_a_calendar_without_working_days_is_an_error():
    with pytest.raises(ValueError):
        calendar_build(timezone="Asia/Shanghai", start=time(9), end=time(18), weekdays="8")


def test_dates_check_names_the_bad_line():
    assert dates_check("2026-10-01\n2026-13-01") == "2026-13-01"
    assert dates_check("2026-10-01, 2026-10-02") is None
