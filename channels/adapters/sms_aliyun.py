"""Aliyun SMS (阿里云短信, dysmsapi `SendSms`, API version 2017-05-25) over RPC-style HTTP.

The request is signed with signature version 1.0: HMAC-SHA1, keyed with the AccessKey secret plus "&",
over "POST&%2F&" + the percent-encoded, sorted, percent-encoded parameters. The rendered text goes into
the approved template's variable SMS_TEMPLATE_PARAM (default `content`), the touch's idempotency key into
`OutId`, which the delivery receipt (SmsReport) carries back. Aliyun does not deduplicate `OutId`, so a
touch a dead worker left `sending` is first looked up with `QuerySendDetails` (by number and day, matched
on `OutId`) before the dispatcher would send it again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from django.conf import settings
from django.utils.timezone import now as timezone_now

from channels.adapters.base import OutgoingMessage, PermanentError, RetryableError, SendResult, SendStatus
from channels.adapters.sms import (
    CHINA,
    SmsProviderAdapter,
    sms_mainland_number,
    sms_text_with_opt_out,
    sms_window_wait,
)

API_VERSION = "2017-05-25"
# Aliyun's flow control counts per phone number per minute, hour and (Beijing) day.
LIMIT_CODES = {"isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL"}
# The account, not the message: the balance ran out or the service is stopped; retry much later.
ACCOUNT_CODES = {"isv.AMOUNT_NOT_ENOUGH", "isv.OUT_OF_SERVICE"}
RETRYABLE_PREFIXES = ("Throttling", "ServiceUnavailable", "isp.", "InternalError")


def aliyun_percent_encode(value: str) -> str:
    """RFC 3986 encoding as Aliyun's signature wants it: only A-Z a-z 0-9 - _ . ~ stay as they are."""
    return quote(value, safe="~")


def aliyun_signature(params: dict[str, str], *, secret: str, method: str = "POST") -> str:
    """Signature v1.0 of a request's parameters (all but `Signature` itself)."""
    canonical = "&".join(
        f"{aliyun_percent_encode(key)}={aliyun_percent_encode(params[key])}"
        for key in sorted(params)
        if key != "Signature"
    )
    to_sign = f"{method}&{aliyun_percent_encode('/')}&{aliyun_percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def aliyun_limit_wait(message: str, now: datetime) -> float:
    """Seconds until the flow-control window named in Aliyun's message opens again: "触发分钟级流控" →
    the next minute, "小时级" → the next hour, "天级" → the next Beijing midnight; default the next hour."""
    text = (message or "").lower()
    if "分钟" in text or "minute" in text:
        return sms_window_wait("minute", now)
    if "天" in text or "日" in text or "day" in text:
        return sms_window_wait("day", now)
    return sms_window_wait("hour", now)


class AliyunSmsAdapter(SmsProviderAdapter):
    """`SendSms` for one lead per call; `OK` → sent with the BizId as provider reference."""

    required_settings = ("SMS_ACCESS_KEY_ID", "SMS_ACCESS_KEY_SECRET", "SMS_SIGN_NAME", "SMS_TEMPLATE_CODE")

    def rate_key(self) -> str:
        return f"sms:aliyun:{settings.SMS_ACCESS_KEY_ID}"

    def signed(self, action: str, business: dict[str, str], *, now: datetime) -> dict[str, str]:
        """The common parameters, the action's own, and the signature over all of them."""
        params = {
            "AccessKeyId": settings.SMS_ACCESS_KEY_ID,
            "Action": action,
            "Format": "JSON",
            "RegionId": "cn-hangzhou",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "Timestamp": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
            **business,
        }
        params["Signature"] = aliyun_signature(params, secret=settings.SMS_ACCESS_KEY_SECRET)
        return params

    def request_params(self, message: OutgoingMessage, *, now: datetime) -> dict[str, str]:
        """The signed parameters of one `SendSms` call."""
        number = sms_mainland_number(message.lead.get("phone", ""))
        if number is None:
            raise PermanentError("the lead has no mainland mobile number", code="no_phone")
        text = sms_text_with_opt_out(message.text)
        business = {
            "PhoneNumbers": number,
            "SignName": settings.SMS_SIGN_NAME,
            "TemplateCode": settings.SMS_TEMPLATE_CODE,
            "TemplateParam": json.dumps({settings.SMS_TEMPLATE_PARAM: text}, ensure_ascii=False),
            "OutId": message.idempotency_key,
        }
        return self.signed("SendSms", business, now=now)

    def call(self, params: dict[str, str], now: datetime) -> dict[str, Any]:
        """POST a signed request; the answer's body when its Code is OK, else the typed error."""
        try:
            response = self.http().post(settings.SMS_ALIYUN_ENDPOINT.rstrip("/") + "/", data=params)
        except httpx.HTTPError as exc:
            raise RetryableError(f"aliyun sms: {exc.__class__.__name__}: {exc}") from exc
        body = _json(response)
        code = str(body.get("Code", ""))
        if response.status_code < 300 and code == "OK":
            return body
        raise _error(response.status_code, code, str(body.get("Message", "")), now)

    def send(self, message: OutgoingMessage) -> SendResult:
        now = timezone_now()
        body = self.call(self.request_params(message, now=now), now)
        return SendResult(
            status=SendStatus.SENT,
            provider_ref=str(body.get("BizId", "")),
            detail={"request_id": body.get("RequestId", "")},
        )

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        """Whether a send a dead worker left unrecorded reached Aliyun: `QuerySendDetails` for the lead's
        number on the days it may have gone out, looking for our `OutId`. None: Aliyun has no such
        message (the dispatcher sends it again, once)."""
        number = sms_mainland_number(message.lead.get("phone", ""))
        if number is None:
            return None
        now = timezone_now()
        days = {d.astimezone(CHINA).strftime("%Y%m%d") for d in (message.due_at or now, now)}
        for day in sorted(days):
            business = {"PhoneNumber": number, "SendDate": day, "PageSize": "50", "CurrentPage": "1"}
            body = self.call(self.signed("QuerySendDetails", business, now=now), now)
            rows = (body.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
            for row in rows:
                if row.get("OutId") != message.idempotency_key:
                    continue
                status = int(row.get("SendStatus") or 1)
                if status == 2:  # sent, and the carrier reported it undelivered
                    raise PermanentError(
                        f"aliyun sms: {row.get('ErrCode', '')}", code=str(row.get("ErrCode", ""))
                    )
                delivered = SendStatus.DELIVERED if status == 3 else SendStatus.SENT
                return SendResult(status=delivered, provider_ref=provider_ref)
        return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(status: int, code: str, text: str, now: datetime) -> Exception:
    """Aliyun's answer as a typed error: flow control and outages retry, a refused message does not."""
    detail = f"aliyun sms {code or status}: {text}".strip()
    if code in LIMIT_CODES:
        return RetryableError(detail, retry_after=aliyun_limit_wait(text, now))
    if code in ACCOUNT_CODES:
        return RetryableError(detail, retry_after=3600)
    if status >= 500 or status == 429 or code.startswith(RETRYABLE_PREFIXES) or not code:
        return RetryableError(detail)
    return PermanentError(detail, code=code)
