"""Tencent Cloud SMS (腾讯云短信, API 3.0 `SendSms`, version 2021-01-11), signed with TC3-HMAC-SHA256.

The rendered text is the template's first parameter ({1}); the touch's idempotency key travels as
`SessionContext`; the answer's `SerialNo` is the provider reference the delivery receipt (`sid`) names.
Tencent does not deduplicate a repeated request: a touch a dead worker left `sending` is first looked up
in the number's delivery reports (matched on `SessionContext`) before the dispatcher sends it again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.utils.timezone import now as timezone_now

from channels.adapters.base import OutgoingMessage, PermanentError, RetryableError, SendResult, SendStatus
from channels.adapters.sms import (
    SmsProviderAdapter,
    sms_mainland_number,
    sms_text_with_opt_out,
    sms_window_wait,
)

API_VERSION = "2021-01-11"
SERVICE = "sms"
CONTENT_TYPE = "application/json; charset=utf-8"
# Per-number frequency limits and the window each waits for.
LIMIT_WINDOWS = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": "minute",
    "LimitExceeded.PhoneNumberOneHourLimit": "hour",
    "LimitExceeded.PhoneNumberDailyLimit": "day",
    "LimitExceeded.PhoneNumberSameContentDailyLimit": "day",
    "LimitExceeded.DailyLimit": "day",
    "LimitExceeded.AppDailyLimit": "day",
    "LimitExceeded.AppCountryOrRegionDailyLimit": "day",
}
# The account, not the message: the SMS package ran out; retry much later.
ACCOUNT_CODES = {"FailedOperation.InsufficientBalanceInSmsPackage"}
RETRYABLE_PREFIXES = ("LimitExceeded", "RequestLimitExceeded", "InternalError", "ResourceUnavailable")


def tc3_authorization(
    *,
    secret_id: str,
    secret_key: str,
    host: str,
    action: str,
    payload: bytes,
    timestamp: int,
    service: str = SERVICE,
    content_type: str = CONTENT_TYPE,
) -> str:
    """The `Authorization` header of a TC3-HMAC-SHA256 signed POST to "/"."""
    date = datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")
    signed_headers = "content-type;host;x-tc-action"
    canonical_headers = f"content-type:{content_type}\nhost:{host}\nx-tc-action:{action.lower()}\n"
    canonical_request = "\n".join(
        ["POST", "/", "", canonical_headers, signed_headers, hashlib.sha256(payload).hexdigest()]
    )
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )

    def sign(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    signing = sign(sign(sign(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    signature = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


class TencentSmsAdapter(SmsProviderAdapter):
    """`SendSms` for one lead per call; status `Ok` → sent with the SerialNo as provider reference."""

    required_settings = (
        "SMS_ACCESS_KEY_ID",
        "SMS_ACCESS_KEY_SECRET",
        "SMS_SIGN_NAME",
        "SMS_TEMPLATE_CODE",
        "SMS_TENCENT_SDK_APP_ID",
    )

    def rate_key(self) -> str:
        return f"sms:tencent:{settings.SMS_ACCESS_KEY_ID}"

    def request_body(self, message: OutgoingMessage) -> dict[str, Any]:
        number = sms_mainland_number(message.lead.get("phone", ""))
        if number is None:
            raise PermanentError("the lead has no mainland mobile number", code="no_phone")
        return {
            "PhoneNumberSet": [f"+86{number}"],
            "SmsSdkAppId": settings.SMS_TENCENT_SDK_APP_ID,
            "SignName": settings.SMS_SIGN_NAME,
            "TemplateId": settings.SMS_TEMPLATE_CODE,
            "TemplateParamSet": [sms_text_with_opt_out(message.text)],
            "SessionContext": message.idempotency_key,
        }

    def call(self, action: str, body: dict[str, Any], now: datetime) -> dict[str, Any]:
        """POST one signed API 3.0 request; its `Response` object, or the typed error it carries."""
        payload = json.dumps(body, ensure_ascii=False).encode()
        endpoint = httpx.URL(settings.SMS_TENCENT_ENDPOINT)
        host = endpoint.netloc.decode()
        timestamp = int(now.timestamp())
        headers = {
            "Authorization": tc3_authorization(
                secret_id=settings.SMS_ACCESS_KEY_ID,
                secret_key=settings.SMS_ACCESS_KEY_SECRET,
                host=host,
                action=action,
                payload=payload,
                timestamp=timestamp,
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": action,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": API_VERSION,
            "X-TC-Region": settings.SMS_TENCENT_REGION,
        }
        try:
            response = self.http().post(str(endpoint.copy_with(path="/")), content=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise RetryableError(f"tencent sms: {exc.__class__.__name__}: {exc}") from exc
        try:
            answer = response.json().get("Response") or {}
        except (ValueError, AttributeError):
            answer = {}
        if response.status_code >= 500 or not answer:
            raise RetryableError(f"tencent sms: HTTP {response.status_code}")
        if error := answer.get("Error"):
            raise _error(str(error.get("Code", "")), str(error.get("Message", "")), now)
        return answer

    def send(self, message: OutgoingMessage) -> SendResult:
        now = timezone_now()
        answer = self.call("SendSms", self.request_body(message), now)
        status = (answer.get("SendStatusSet") or [{}])[0]
        code = str(status.get("Code", ""))
        if code == "Ok":
            return SendResult(
                status=SendStatus.SENT,
                provider_ref=str(status.get("SerialNo", "")),
                detail={"request_id": answer.get("RequestId", ""), "fee": status.get("Fee")},
            )
        raise _error(code, str(status.get("Message", "")), now)

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        """Whether a send a dead worker left unrecorded reached Tencent: the number's delivery reports
        since the touch fell due (`PullSmsSendStatusByPhoneNumber`), matched on `SessionContext`. None:
        no report names it (the dispatcher sends it again)."""
        number = sms_mainland_number(message.lead.get("phone", ""))
        if number is None:
            return None
        now = timezone_now()
        begin = min(message.due_at or now, now) - timedelta(minutes=5)
        body = {
            "BeginTime": int(begin.timestamp()),
            "EndTime": int(now.timestamp()),
            "Offset": 0,
            "Limit": 100,
            "PhoneNumber": f"+86{number}",
            "SmsSdkAppId": settings.SMS_TENCENT_SDK_APP_ID,
        }
        answer = self.call("PullSmsSendStatusByPhoneNumber", body, now)
        for row in answer.get("PullSmsSendStatusSet") or []:
            if row.get("SessionContext") != message.idempotency_key:
                continue
            if str(row.get("ReportStatus", "")).upper() != "SUCCESS":
                raise PermanentError(
                    f"tencent sms: undelivered {row.get('Description', '')}", code="undelivered"
                )
            return SendResult(
                status=SendStatus.DELIVERED, provider_ref=str(row.get("SerialNo") or provider_ref)
            )
        return None


def _error(code: str, text: str, now: datetime) -> Exception:
    """Tencent's code as a typed error: frequency limits and outages retry, a refused number does not."""
    detail = f"tencent sms {code}: {text}".strip()
    if code in LIMIT_WINDOWS:
        return RetryableError(detail, retry_after=sms_window_wait(LIMIT_WINDOWS[code], now))
    if code in ACCOUNT_CODES:
        return RetryableError(detail, retry_after=3600)
    if code.startswith(RETRYABLE_PREFIXES) or not code:
        per_number = code.startswith("LimitExceeded.")  # another per-number quota: wait for the next hour
        return RetryableError(detail, retry_after=sms_window_wait("hour", now) if per_number else None)
    return PermanentError(detail, code=code)
