"""Adapters standing for providers in the engine's channel-health tests: one that is down, one behind a
token bucket, one that takes batches, one whose sends wait for a person's confirmation."""

from __future__ import annotations

from channels.adapters.base import (
    BatchOutcome,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    SendResult,
    SendStatus,
)
from tests.sequences.recording import RecordingAdapter

CALLS: dict[str, list] = {"down": [], "batches": [], "reconcile": []}
# Two-phase answers by idempotency key: "sent", "not_friend", "quota"; missing = still waiting.
ANSWERS: dict[str, str] = {}


def reset() -> None:
    for calls in CALLS.values():
        calls.clear()
    ANSWERS.clear()


class DownAdapter(RecordingAdapter):
    """The provider answers 503 to everything."""

    def send(self, message: OutgoingMessage) -> SendResult:
        CALLS["down"].append(message.idempotency_key)
        raise RetryableError("503 Service Unavailable")


class ThrottledAdapter(RecordingAdapter):
    rate = (0.5, 2)  # two at once, then one every two seconds

    def rate_key(self) -> str:
        return "test:throttled"


class BatchAdapter(RecordingAdapter):
    batch_size = 1000

    def send_batch(self, messages: list[OutgoingMessage]) -> dict[int, BatchOutcome]:
        CALLS["batches"].append(len(messages))
        return super().send_batch(messages)


class TwoPhaseAdapter(RecordingAdapter):
    def send(self, message: OutgoingMessage) -> SendResult:
        super().send(message)
        return SendResult(status=SendStatus.AWAITING_CONFIRM, provider_ref=f"tp:{message.idempotency_key}")

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        CALLS["reconcile"].append(provider_ref)
        answer = ANSWERS.get(message.idempotency_key)
        if answer == "sent":
            return SendResult(status=SendStatus.SENT, provider_ref=provider_ref)
        if answer == "not_friend":
            raise PermanentError("the customer is not a friend of the staff member", code="not_friend")
        if answer == "quota":
            return SendResult(status=SendStatus.SKIPPED_POLICY, provider_ref=provider_ref, reason="quota")
        return SendResult(status=SendStatus.AWAITING_CONFIRM, provider_ref=provider_ref)


class UnsureAdapter(RecordingAdapter):
    """An SMS-like provider that does not deduplicate and cannot say, right now, what became of a send."""

    honours_idempotency_key = False

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        CALLS["reconcile"].append(message.idempotency_key)
        raise RetryableError("query API timed out")
