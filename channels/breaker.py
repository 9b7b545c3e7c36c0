"""The circuit breaker: a channel whose provider fails N times in a row (retryable failures: timeouts,
5xx, rate limits) is paused for M minutes. While it is paused its due touches wait — they are not
handed out, not lost and not made stale by the outage: a touch's lateness counts from the later of its
due time and the moment its channel resumed (`ChannelHealth.resumed_at`).

One dispatch batch reads the channels' health once (`ChannelBreakers`), counts in memory and writes
once at the end (or as soon as the breaker opens), so a healthy channel costs no query per touch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F

from channels.models import ChannelHealth


def channels_paused(*, now: datetime) -> dict[str, datetime]:
    """Channels whose breaker is open now, with the time each resumes."""
    return dict(ChannelHealth.objects.filter(paused_until__gt=now).values_list("channel", "paused_until"))


def channels_resumed(*, since: datetime) -> dict[str, datetime]:
    """Channels that resumed after a pause since `since` (their waiting touches' lateness restarts)."""
    return dict(
        ChannelHealth.objects.filter(resumed_at__gt=since, resumed_at__isnull=False).values_list(
            "channel", "resumed_at"
        )
    )


def channel_resume(*, channel: str, now: datetime) -> None:
    """Close a channel's breaker by hand (the admin's "resume now")."""
    ChannelHealth.objects.filter(channel=channel, paused_until__gt=now).update(
        paused_until=now, resumed_at=now, consecutive_failures=0
    )


@dataclass
class _State:
    failures: int  # in a row, as stored at the start of the batch
    paused_until: datetime | None
    trailing: int = 0  # failures in a row in this batch since its last success
    succeeded: bool = False
    dirty: bool = False


class ChannelBreakers:
    """The breakers of the channels of one dispatch batch."""

    def __init__(self, *, channels: Iterable[str], now: datetime) -> None:
        self.now = now
        self.threshold = settings.NURTURE_BREAKER_FAILURES
        self.pause = timedelta(minutes=settings.NURTURE_BREAKER_PAUSE_MINUTES)
        rows = ChannelHealth.objects.filter(channel__in=set(channels)).values_list(
            "channel", "consecutive_failures", "paused_until"
        )
        self.states = {channel: _State(failures, until) for channel, failures, until in rows}

    def _state(self, channel: str) -> _State:
        return self.states.setdefault(channel, _State(0, None))

    def is_open(self, channel: str) -> bool:
        until = self._state(channel).paused_until
        return until is not None and until > self.now

    def success(self, channel: str) -> None:
        state = self._state(channel)
        if state.failures or state.trailing:
            state.dirty = True
        state.succeeded, state.trailing = True, 0

    def failure(self, channel: str, error: str) -> bool:
        """Count a failure; True when this one opened the breaker."""
        state = self._state(channel)
        state.trailing += 1
        state.dirty = True
        in_a_row = state.trailing + (0 if state.succeeded else state.failures)
        if in_a_row >= self.threshold and not self.is_open(channel):
            state.paused_until = self.now + self.pause
            self._write(channel, state, error, opened=True)
            return True
        self._write(channel, state, error, opened=False)
        return False

    def _write(self, channel: str, state: _State, error: str, *, opened: bool) -> None:
        fields: dict = {"last_error": error[:2000], "last_failure_at": self.now}
        if opened:
            fields.update(paused_until=state.paused_until, resumed_at=state.paused_until)
        ChannelHealth.objects.get_or_create(channel=channel)
        if state.succeeded:
            fields["consecutive_failures"] = state.trailing
        else:
            fields["consecutive_failures"] = F("consecutive_failures") + 1
        ChannelHealth.objects.filter(channel=channel).update(**fields)
        state.dirty = False

    def save(self) -> None:
        """Write what changed: a success after failures resets the count."""
        for channel, state in self.states.items():
            if state.dirty and state.succeeded and state.trailing == 0:
                ChannelHealth.objects.filter(channel=channel).update(
                    consecutive_failures=0, last_success_at=self.now
                )
                state.dirty = False
