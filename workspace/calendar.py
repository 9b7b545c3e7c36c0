"""The working calendar the SLA counts in: working hours on working days (weekdays, minus holidays,
plus make-up days) in one time zone. Pure functions of their arguments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# A calendar with no working day at all would loop for ever; after this many days the search gives up.
HORIZON_DAYS = 800


@dataclass(frozen=True)
class WorkCalendar:
    tz: ZoneInfo
    start: time
    end: time
    weekdays: frozenset[int]  # ISO: 1 = Monday
    holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()

    def is_workday(self, day: date) -> bool:
        if day in self.extra_workdays:
            return True
        return day.isoweekday() in self.weekdays and day not in self.holidays

    def _window(self, day: date) -> tuple[datetime, datetime]:
        return (
            datetime.combine(day, self.start, tzinfo=self.tz),
            datetime.combine(day, self.end, tzinfo=self.tz),
        )

    def add_working_time(self, at: datetime, amount: timedelta) -> datetime:
        """The moment `amount` of working time after `at` (outside working hours the clock waits for the
        next working day's start). A zero amount gives `at` itself moved to working time."""
        local = at.astimezone(self.tz)
        remaining = amount
        day = local.date()
        for _ in range(HORIZON_DAYS):
            if self.is_workday(day):
                opens, closes = self._window(day)
                cursor = max(local, opens)
                if cursor < closes:
                    available = closes - cursor
                    if remaining <= available:
                        return cursor + remaining
                    remaining -= available
            day += timedelta(days=1)
            local = datetime.combine(day, self.start, tzinfo=self.tz)
        raise ValueError("the working calendar has no working day within the horizon")

    def working_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time from `start` to `end` (negative when `end` is earlier)."""
        if end < start:
            return -self.working_time_between(end, start)
        total = timedelta()
        day = start.astimezone(self.tz).date()
        last = end.astimezone(self.tz).date()
        while day <= last:
            if self.is_workday(day):
                opens, closes = self._window(day)
                lo, hi = max(opens, start), min(closes, end)
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total


def _dates(text: str) -> frozenset[date]:
    out = set()
    for line in text.replace(",", "\n").splitlines():
        line = line.strip()
        if line:
            out.add(date.fromisoformat(line))
    return frozenset(out)


def dates_check(text: str) -> str | None:
    """The first line of `text` that is not a YYYY-MM-DD date, or None."""
    for line in text.replace(",", "\n").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            date.fromisoformat(line)
        except ValueError:
            return line
    return None


def weekdays_parse(text: str) -> frozenset[int]:
    days = frozenset(int(part) for part in text.replace(" ", "").split(",") if part)
    if not days or not days <= set(range(1, 8)):
        raise ValueError("weekdays are ISO numbers 1 (Monday) to 7 (Sunday)")
    return days


def calendar_build(
    *,
    timezone: str,
    start: time,
    end: time,
    weekdays: str,
    holidays: str = "",
    extra_workdays: str = "",
) -> WorkCalendar:
    return WorkCalendar(
        tz=ZoneInfo(timezone),
        start=start,
        end=end,
        weekdays=weekdays_parse(weekdays),
        holidays=_dates(holidays),
        extra_workdays=_dates(extra_workdays),
    )
