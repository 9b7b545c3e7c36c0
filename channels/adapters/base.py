"""The channel adapter interface: what the dispatcher calls for each touch, and the typed errors it
understands. One adapter per provider in `channels/adapters/<name>.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol


class SendStatus:
    SENT = "sent"
    AWAITING_CONFIRM = "awaiting_confirm"  # created at the provider, a person still has to confirm it
    DELIVERED = "delivered"
    SKIPPED_POLICY = "skipped_policy"  # the platform's rules refuse it (quota, 48-hour window …)


@dataclass(frozen=True)
class OutgoingMessage:
    """Everything an adapter needs about one touch; no model object crosses into a provider's code."""

    touch_id: int
    idempotency_key: str
    channel: str
    lead_id: int
    lead: dict[str, Any]
    text: str
    link: str = ""
    content_title: str = ""
    owner_id: int | None = None


@dataclass(frozen=True)
class SendResult:
    status: str
    provider_ref: str = ""
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class RetryableError(Exception):
    """A transient failure (timeout, 5xx, rate limited): try again later with the same key."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad recipient, refused content): the touch fails now."""

    def __init__(self, message: str = "", *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PolicyVerdict:
    allowed: bool
    reason: str = ""


class Adapter(Protocol):
    channel: ClassVar[str]
    honours_idempotency_key: ClassVar[bool]

    def configured(self) -> bool:
        """Whether the settings this adapter needs are present."""

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        """The platform's quotas and windows, before any call."""

    def send(self, message: OutgoingMessage) -> SendResult:
        """Send once; the idempotency key is passed on to providers that accept one."""

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        """What became of a send whose outcome was not recorded (None: unknown, send again)."""


class BaseAdapter:
    """Defaults: configured, no policy, no reconcile, and a provider that does not deduplicate."""

    channel: ClassVar[str] = ""
    # The provider delivers a repeated idempotency key once. Then the dispatcher may write results a
    # batch at a time (after a crash a few accepted sends are offered again under their key); for a
    # provider that does not (SMS gateways), each result is written as soon as the call returns.
    honours_idempotency_key: ClassVar[bool] = False

    def configured(self) -> bool:
        return True

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        return PolicyVerdict(True)

    def send(self, message: OutgoingMessage) -> SendResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        return None
