"""The `webhook` step channel: each touch is POSTed as JSON to NURTURE_WEBHOOK_CHANNEL_URL (a system of
yours that sends it on, e.g. a call centre or a chat bot), signed like the outbound webhooks:
`X-Nurture-Signature: sha256=<hex HMAC-SHA256 of the raw body with NURTURE_WEBHOOK_CHANNEL_SECRET>`.
`Idempotency-Key` carries the touch's key: a receiver that honours it (as documented) handles a resent
touch once. 2xx is sent; 4xx fails the touch; 5xx, 429 and network errors are retried."""

from __future__ import annotations

import json
from typing import Any

import httpx
from django.conf import settings

from channels.adapters.base import (
    BaseAdapter,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    SendResult,
    SendStatus,
)
from channels.webhooks import webhook_sign

LEAD_FIELDS = (
    "name",
    "company",
    "phone",
    "email",
    "wecom_external_userid",
    "wechat_unionid",
    "wechat_openid",
)


def touch_payload(message: OutgoingMessage) -> dict[str, Any]:
    """The JSON body of one touch."""
    return {
        "id": message.idempotency_key,
        "type": "touch",
        "touch": message.touch_id,
        "channel": "webhook",
        "sequence": message.sequence_id,
        "step": message.step_id,
        "due_at": message.due_at.isoformat() if message.due_at else None,
        "lead": {
            "id": message.lead_id,
            "owner": message.owner_id,
            **{k: message.lead.get(k, "") for k in LEAD_FIELDS},
        },
        "text": message.text,
        "link": message.link,
        "content_title": message.content_title,
    }


class WebhookAdapter(BaseAdapter):
    channel = "webhook"
    required_settings = ("NURTURE_WEBHOOK_CHANNEL_URL", "NURTURE_WEBHOOK_CHANNEL_SECRET")
    # The receiver's contract (README): a repeated Idempotency-Key is handled once.
    honours_idempotency_key = True

    def __init__(self) -> None:
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.NURTURE_WEBHOOK_TIMEOUT_SECONDS), follow_redirects=False
        )

    def send(self, message: OutgoingMessage) -> SendResult:
        body = json.dumps(
            touch_payload(message), ensure_ascii=False, separators=(",", ":"), default=str
        ).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "nurture-webhooks/1",
            "Idempotency-Key": message.idempotency_key,
            "X-Nurture-Event": "touch",
            "X-Nurture-Signature": webhook_sign(body=body, secret=settings.NURTURE_WEBHOOK_CHANNEL_SECRET),
        }
        try:
            response = self._client.post(settings.NURTURE_WEBHOOK_CHANNEL_URL, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(status=SendStatus.SENT, provider_ref=f"webhook:{message.idempotency_key}")
        detail = response.text[:300]
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After", "")
            raise RetryableError(
                f"HTTP {status}: {detail}", retry_after=float(retry_after) if retry_after.isdigit() else None
            )
        raise PermanentError(f"HTTP {status}: {detail}", code=f"http_{status}")
