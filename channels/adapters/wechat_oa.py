"""The `wechat_oa` channel: the official account writes to the lead's openid.

Two kinds of message, chosen by WECHAT_OA_MODE:
- a **template message** (`message/template/send`), allowed at any time, with `client_msg_id` = the
  touch's idempotency key (WeChat sends one message per openid and key): the rendered text goes into
  the template's fields as WECHAT_OA_TEMPLATE_FIELDS maps them, the touch's link is the message's url;
- a **customer-service message** (`message/custom/send`, text), free-form but only within 48 hours of
  the lead's last interaction with the account (`Lead.wechat_oa_interaction_at`: a message, a menu
  click, a scan, the subscription). Outside the window `policy_check` refuses with `outside_48h`, and
  the dispatcher hands the touch to the step's fallback channel or skips it with that reason.

`template` always sends templates; `custom` only customer-service messages; `auto` (the default) a
customer-service message inside the window and the template outside it, or, without a template id,
refuses outside the window as `custom` does.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.timezone import now as timezone_now

from channels.adapters.base import (
    BaseAdapter,
    OutgoingMessage,
    PermanentError,
    PolicyVerdict,
    SendResult,
    SendStatus,
)
from channels.wechat_oa.client import WechatOaError, wechat_oa_client

WINDOW = timedelta(hours=48)
MODES = ("template", "custom", "auto")
# Customer-service refusals that are the platform's rules, not failures: 45015 the 48-hour window has
# closed (our copy of the interaction time was behind), 45047 too many messages without a reply.
POLICY_ERRCODES = {45015: "outside_48h", 45047: "custom_limit"}
# The user no longer follows the account: nothing will reach them.
NOT_SUBSCRIBED = 43004
TEMPLATE_SOURCES = ("text", "title", "name", "company", "link")


def _mode() -> str:
    mode = (settings.WECHAT_OA_MODE or "auto").strip().lower()
    if mode not in MODES:
        raise ImproperlyConfigured(f"WECHAT_OA_MODE={mode!r}: use one of {', '.join(MODES)}")
    return mode


def _template_fields() -> dict[str, str]:
    try:
        fields = json.loads(settings.WECHAT_OA_TEMPLATE_FIELDS or "{}")
    except ValueError as exc:
        raise ImproperlyConfigured(f"WECHAT_OA_TEMPLATE_FIELDS is not JSON: {exc}") from exc
    if not isinstance(fields, dict) or not fields:
        raise ImproperlyConfigured('WECHAT_OA_TEMPLATE_FIELDS must be an object, e.g. {"thing1": "text:20"}')
    return {str(k): str(v) for k, v in fields.items()}


def template_data(message: OutgoingMessage, fields: dict[str, str]) -> dict[str, dict[str, str]]:
    """The template's `data`: each field from a source (`text`, `title`, `name`, `company`, `link`,
    optionally `:N` to cut it to N characters, as `thing` fields allow 20), any other value as is."""
    values = {
        "text": message.text,
        "title": message.content_title,
        "name": str(message.lead.get("name") or ""),
        "company": str(message.lead.get("company") or ""),
        "link": message.link,
    }
    data: dict[str, dict[str, str]] = {}
    for field, spec in fields.items():
        source, _, limit = spec.partition(":")
        if source in TEMPLATE_SOURCES:
            value = values[source]
            if limit.isdigit() and len(value) > int(limit):
                value = value[: max(int(limit) - 1, 0)] + "…"
        else:
            value = spec
        data[field] = {"value": value}
    return data


def in_window(interaction_at: Any, now: datetime) -> bool:
    """Whether the 48-hour customer-service window is open at `now`."""
    return isinstance(interaction_at, datetime) and now - interaction_at < WINDOW


class WechatOaAdapter(BaseAdapter):
    """Template and customer-service messages of the official account; see the module docstring."""

    channel = "wechat_oa"
    required_settings = ("WECHAT_OA_APP_ID", "WECHAT_OA_SECRET")
    # WeChat's customer-service and template endpoints allow far more; this spares the daily quota.
    rate = (50.0, 100)

    @property
    def honours_idempotency_key(self) -> bool:  # type: ignore[override]
        # Only templates carry client_msg_id; a customer-service message sent twice arrives twice.
        return _mode() == "template"

    def missing_settings(self) -> list[str]:
        missing = super().missing_settings()
        if _mode() == "template" and not settings.WECHAT_OA_TEMPLATE_ID:
            missing.append("WECHAT_OA_TEMPLATE_ID")
        return missing

    def rate_key(self) -> str:
        return f"wechat_oa:{settings.WECHAT_OA_APP_ID}"

    def _kind(self, message: OutgoingMessage, now: datetime) -> str | None:
        """`template`, `custom`, or None when neither may be sent now."""
        mode = _mode()
        if mode == "template":
            return "template"
        if in_window(message.lead.get("wechat_oa_interaction_at"), now):
            return "custom"
        if mode == "auto" and settings.WECHAT_OA_TEMPLATE_ID:
            return "template"
        return None

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        """The lead must follow the account (an openid); a customer-service message needs the window."""
        if not message.lead.get("wechat_openid"):
            return PolicyVerdict(False, "no_openid")
        if self._kind(message, now) is None:
            return PolicyVerdict(False, "outside_48h")
        return PolicyVerdict(True)

    def send(self, message: OutgoingMessage) -> SendResult:
        """Send a template or a customer-service message. The kind is chosen again by the real clock:
        WeChat judges its window at the moment of the call."""
        openid = str(message.lead.get("wechat_openid") or "")
        if not openid:
            raise PermanentError("the lead has no official-account openid", code="no_openid")
        kind = self._kind(message, timezone_now())
        if kind is None:
            return SendResult(status=SendStatus.SKIPPED_POLICY, reason="outside_48h")
        try:
            if kind == "template":
                payload = {
                    "touser": openid,
                    "template_id": settings.WECHAT_OA_TEMPLATE_ID,
                    "client_msg_id": message.idempotency_key,
                    "data": template_data(message, _template_fields()),
                }
                if message.link:  # without one the template opens nothing
                    payload["url"] = message.link
                body = wechat_oa_client().call("message/template/send", payload)
                return SendResult(status=SendStatus.SENT, provider_ref=str(body.get("msgid") or ""))
            text = message.text
            if message.link and message.link not in text:
                text = f"{text}\n{message.link}" if text else message.link
            wechat_oa_client().call(
                "message/custom/send", {"touser": openid, "msgtype": "text", "text": {"content": text}}
            )
            return SendResult(status=SendStatus.SENT, detail={"kind": "custom"})
        except WechatOaError as exc:
            if exc.errcode in POLICY_ERRCODES:
                return SendResult(status=SendStatus.SKIPPED_POLICY, reason=POLICY_ERRCODES[exc.errcode])
            if exc.errcode == NOT_SUBSCRIBED:
                raise PermanentError("the user does not follow the official account", code="43004") from exc
            raise PermanentError(str(exc), code=str(exc.errcode)) from exc
