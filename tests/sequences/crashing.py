"""An adapter for the kill-mid-way test: it records each send (the provider accepted it) and, on the
send named by NURTURE_TEST_CRASH_AT, kills its own process before the engine can record the result."""

from __future__ import annotations

import os

from channels.adapters.base import OutgoingMessage, SendResult
from tests.sequences.recording import RecordingAdapter, recording_calls


class CrashingAdapter(RecordingAdapter):
    def send(self, message: OutgoingMessage) -> SendResult:
        result = super().send(message)
        crash_at = int(os.environ.get("NURTURE_TEST_CRASH_AT", "0"))
        if crash_at and sum(recording_calls().values()) == crash_at:
            os._exit(9)  # the worker dies: the provider has the message, our database does not know
        return result
