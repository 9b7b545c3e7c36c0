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
    step_id: int | None = None
    sequence_id: int | None = None
    due_at: datetime | None = None
    timezone: str = "Asia/Shanghai"


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


BatchOutcome = SendResult | RetryableError | PermanentError


class Adapter(Protocol):
    channel: ClassVar[str]
    honours_idempotency_key: ClassVar[bool]
    # >0: the dispatcher hands this adapter up to that many due touches at once, in `send_batch`.
    batch_size: ClassVar[int]
    # Token bucket shared by all workers (Redis): sends per second and burst; None = unlimited.
    rate: ClassVar[tuple[float, int] | None]

    def configured(self) -> bool:
        """Whether the settings this adapter needs are present."""

    def missing_settings(self) -> list[str]:
        """The names of the settings (environment variables) still missing; shown in the admin."""

    def rate_key(self) -> str:
        """The token bucket's key: provider and account (two accounts do not share a quota)."""

    def send_batch(self, messages: list[OutgoingMessage]) -> dict[int, BatchOutcome]:
        """Send many at once (by touch id); each touch's outcome is a result or a typed error."""

    def policy_check_batch(self, messages: list[OutgoingMessage], now: datetime) -> dict[int, PolicyVerdict]:
        """`policy_check` for many (by touch id), in a bounded number of queries."""

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        """The platform's quotas and windows, before any call."""

    def send(self, message: OutgoingMessage) -> SendResult:
        """Send once; the idempotency key is passed on to providers that accept one."""

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        """What became of a send: a touch left `sending` by a dead worker, or one `awaiting_confirm`
        (polled every tick). None: the provider has no record of it (send again); a result with
        status AWAITING_CONFIRM: still waiting; SENT/DELIVERED: done; SKIPPED_POLICY: refused by the
        platform (quota); raises PermanentError: failed (e.g. not a friend)."""

    def reconcile_batch(
        self, items: list[tuple[OutgoingMessage, str]]
    ) -> dict[int, SendResult | PermanentError | None]:
        """`reconcile` for many touches at once (by touch id); PermanentError as a value = failed."""


class BaseAdapter:
    """Defaults: configured, no policy, no reconcile, and a provider that does not deduplicate."""

    channel: ClassVar[str] = ""
    batch_size: ClassVar[int] = 0
    rate: ClassVar[tuple[float, int] | None] = None
    # Environment variables this adapter needs (configured() is True when all are set).
    required_settings: ClassVar[tuple[str, ...]] = ()
    # The provider delivers a repeated idempotency key once. Then the dispatcher may write results a
    # batch at a time (after a crash a few accepted sends are offered again under their key); for a
    # provider that does not (SMS gateways), each result is written as soon as the call returns.
    honours_idempotency_key: ClassVar[bool] = False

    def configured(self) -> bool:
        return not self.missing_settings()

    def missing_settings(self) -> list[str]:
        from django.conf import settings

        return [name for name in self.required_settings if not getattr(settings, name, "")]

    def rate_key(self) -> str:
        return self.channel

    def send_batch(self, messages: list[OutgoingMessage]) -> dict[int, BatchOutcome]:
        outcomes: dict[int, BatchOutcome] = {}
        for message in messages:
            try:
                outcomes[message.touch_id] = self.send(message)
            except (RetryableError, PermanentError) as exc:
                outcomes[message.touch_id] = exc
        return outcomes

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        return PolicyVerdict(True)

    def policy_check_batch(self, messages: list[OutgoingMessage], now: datetime) -> dict[int, PolicyVerdict]:
        return {message.touch_id: self.policy_check(message, now) for message in messages}

    def send(self, message: OutgoingMessage) -> SendResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        return None

    def reconcile_batch(
        self, items: list[tuple[OutgoingMessage, str]]
    ) -> dict[int, SendResult | PermanentError | None]:
        outcomes: dict[int, SendResult | PermanentError | None] = {}
        for message, ref in items:
            try:
                outcomes[message.touch_id] = self.reconcile(message, ref)
            except PermanentError as exc:
                outcomes[message.touch_id] = exc
            except RetryableError:
                outcomes[message.touch_id] = SendResult(status=SendStatus.AWAITING_CONFIRM, provider_ref=ref)
        return outcomes
