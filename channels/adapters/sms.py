"""The `sms` channel: SMS_PROVIDER (aliyun | tencent) picks the provider adapter; what both share (the
mainland number, the opt-out words) lives here.

Neither provider deduplicates a repeated request, so `honours_idempotency_key` is False: the dispatcher
records each result as soon as the provider's call returns. The touch's idempotency key still travels
with the message (Aliyun `OutId`, Tencent `SessionContext`) and comes back in the delivery receipts.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from django.conf import settings

from channels.adapters.base import BaseAdapter, OutgoingMessage, PolicyVerdict, SendResult

MAINLAND_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")
# The providers' daily quotas reset at midnight in Beijing.
CHINA = ZoneInfo("Asia/Shanghai")


def sms_window_wait(unit: str, now: datetime) -> float:
    """Seconds from `now` until the provider's next flow-control window ("minute", "hour" or "day")."""
    if unit == "minute":
        start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    elif unit == "day":
        local = now.astimezone(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
        start = (local + timedelta(days=1)).astimezone(UTC)
    else:
        start = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return max(1.0, (start - now).total_seconds())


def sms_mainland_number(phone: str) -> str | None:
    """The 11-digit mainland mobile number of an E.164 (or bare) phone, or None for any other."""
    match = MAINLAND_MOBILE.match((phone or "").replace(" ", "").replace("-", ""))
    return match.group(1) if match else None


def sms_text_with_opt_out(text: str) -> str:
    """The text with the opt-out words the provider requires (SMS_OPT_OUT_TEXT) appended when missing."""
    words = settings.SMS_OPT_OUT_TEXT.strip()
    text = text.strip()
    if not words or words in text:
        return text
    return f"{text} {words}" if text else words


class SmsProviderAdapter(BaseAdapter):
    """What the SMS providers share: a mainland phone is required, and the account's send rate."""

    channel = "sms"
    honours_idempotency_key = False
    _http: httpx.Client | None = None

    def http(self) -> httpx.Client:
        """One connection pool per adapter instance (the registry keeps one per process)."""
        if self._http is None:
            self._http = httpx.Client(timeout=settings.SMS_HTTP_TIMEOUT_SECONDS)
        return self._http

    @property
    def rate(self) -> tuple[float, int] | None:  # type: ignore[override]
        per_second = settings.SMS_RATE_PER_SECOND
        return (float(per_second), max(1, per_second)) if per_second > 0 else None

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        if sms_mainland_number(message.lead.get("phone", "")) is None:
            return PolicyVerdict(False, "no_phone")
        return PolicyVerdict(True)


_PROVIDERS = {
    "aliyun": "channels.adapters.sms_aliyun.AliyunSmsAdapter",
    "tencent": "channels.adapters.sms_tencent.TencentSmsAdapter",
}


class SmsAdapter(BaseAdapter):
    """Delegates every call to the adapter of SMS_PROVIDER (read when the registry builds it)."""

    channel = "sms"
    honours_idempotency_key = False

    def __init__(self) -> None:
        from django.utils.module_loading import import_string

        path = _PROVIDERS.get(settings.SMS_PROVIDER.strip().lower())
        self.provider: BaseAdapter | None = import_string(path)() if path else None

    @property
    def rate(self) -> tuple[float, int] | None:  # type: ignore[override]
        return self.provider.rate if self.provider else None

    def missing_settings(self) -> list[str]:
        if self.provider is None:
            return ["SMS_PROVIDER"]
        return self.provider.missing_settings()

    def rate_key(self) -> str:
        return self.provider.rate_key() if self.provider else "sms"

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        assert self.provider is not None
        return self.provider.policy_check(message, now)

    def send(self, message: OutgoingMessage) -> SendResult:
        assert self.provider is not None
        return self.provider.send(message)

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        return self.provider.reconcile(message, provider_ref) if self.provider else None
