"""An adapter for the kill-mid-way test: it records each send (the provider accepted it) and, on the
send named by NURTURE_TEST_CRASH_AT, kills its own process before the engine can record the result."""

from __future__ import annotations

import os

from channels.adapters.base import OutgoingMessage, SendResult
from tests.sequences.recording import RecordingAdapter, recording_calls


class CrashingAdapter(RecordingAdapter):
    # As an SMS gateway: the dispatcher must write each result as soon as the call returns.
    honours_idempotency_key = False

    def send(self, message: OutgoingMessage) -> SendResult:
        result = super().send(message)
        crash_at = int(os.environ.get("NURTURE_TEST_CRASH_AT", "0"))
        if crash_at and sum(recording_calls().values()) == crash_at:
            os._exit(9)  # the worker dies: the provider has the message, our database does not know
        return result


class CrashingKeyedAdapter(CrashingAdapter):
    """The same crash at a provider that delivers a repeated key once (results written in batches)."""

    honours_idempotency_key = True
