"""When a step falls due (CONTRACT §5): local day N after the anchor at the step's send time in the
sequence's time zone, out of quiet hours, and where a frequency cap moves it. Pure functions of their
arguments: the engine, `simulate` and the admin preview all ask these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_SEND_TIME = time(10, 0)


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, value: dict[str, str] | None) -> QuietHours | None:
        if not value:
            return None
        return cls(start=parse_hhmm(value["start"]), end=parse_hhmm(value["end"]))

    def contains(self, moment: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:  # a window within one day, e.g. 12:00–14:00
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # across midnight, e.g. 21:00–08:00


def parse_hhmm(value: str) -> time:
    """ "HH:MM" → time; ValueError with the value otherwise."""
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{value!r} is not a time of day HH:MM") from exc


def _at_local(day: date, moment: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, moment, tzinfo=zone)


def step_nominal_due(*, anchor_at: datetime, day: int, send_time: time | None, zone: ZoneInfo) -> datetime:
    """(local date of the anchor + day) at send_time; no send time: the anchor itself on day 0, the
    anchor's time of day on a later day."""
    local_anchor = anchor_at.astimezone(zone)
    if send_time is None:
        if day == 0:
            return anchor_at
        return _at_local(
            local_anchor.date() + timedelta(days=day), local_anchor.time().replace(tzinfo=None), zone
        )
    return _at_local(local_anchor.date() + timedelta(days=day), send_time, zone)


def quiet_hours_shift(due: datetime, *, zone: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """A due time inside quiet hours moves to their end (the same or the next local day)."""
    if quiet is None:
        return due
    local = due.astimezone(zone)
    if not quiet.contains(local.time().replace(tzinfo=None)):
        return due
    end_day = local.date()
    if quiet.start > quiet.end and local.time().replace(tzinfo=None) >= quiet.start:
        end_day += timedelta(days=1)  # 21:30 → 08:00 the next morning
    return _at_local(end_day, quiet.end, zone)


def step_due(
    *, anchor_at: datetime, day: int, send_time: time | None, zone: ZoneInfo, quiet: QuietHours | None
) -> datetime:
    """The due time of a step for one enrollment, quiet hours applied."""
    nominal = step_nominal_due(anchor_at=anchor_at, day=day, send_time=send_time, zone=zone)
    return quiet_hours_shift(nominal, zone=zone, quiet=quiet)


def local_day_bounds(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of the local day of `moment` in `zone`, as aware datetimes."""
    day = moment.astimezone(zone).date()
    return _at_local(day, time(0, 0), zone), _at_local(day + timedelta(days=1), time(0, 0), zone)


def cap_shift(due: datetime, *, zone: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """The next allowed time after a capped local day: the next local day at the same local time of
    day, out of quiet hours."""
    local = due.astimezone(zone)
    moved = _at_local(local.date() + timedelta(days=1), local.time().replace(tzinfo=None), zone)
    return quiet_hours_shift(moved, zone=zone, quiet=quiet)
