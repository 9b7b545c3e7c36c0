"""Adapters that fail the way providers do, for the retry and fallback tests."""

from __future__ import annotations

from datetime import datetime

from channels.adapters.base import OutgoingMessage, PermanentError, PolicyVerdict, RetryableError, SendResult
from tests.sequences.recording import RecordingAdapter

FAILURES: dict[str, int] = {}  # idempotency key → retryable failures still to give


class FlakyAdapter(RecordingAdapter):
    """Times out while FAILURES says so, then sends."""

    def send(self, message: OutgoingMessage) -> SendResult:
        left = FAILURES.get(message.idempotency_key, 0)
        if left:
            FAILURES[message.idempotency_key] = left - 1
            raise RetryableError("provider timed out")
        return super().send(message)


class RefusingAdapter(RecordingAdapter):
    def send(self, message: OutgoingMessage) -> SendResult:
        raise PermanentError("the number does not exist", code="bad_recipient")


class OutsideWindowAdapter(RecordingAdapter):
    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        return PolicyVerdict(False, "outside_48h_window")
