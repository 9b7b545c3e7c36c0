"""The welcome message (`externalcontact/send_welcome_msg`) a customer gets when they add a staff member.

WeCom hands a `WelcomeCode` with the add event; it is valid for 20 seconds and for one message. The text
is the channel QR code's `welcome_text`, else WECOM_WELCOME_TEXT, rendered as a message template
(`{{ lead.name }}`, `{{ sender.name }}`, … see content.templating). errcode 41051 means the code was
used or expired: done, never retried. Transient errors are retried only while the window is open.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta

from django.conf import settings

from channels.adapters.base import RetryableError
from channels.models import ContactWay, WecomMember
from channels.wecom.client import WecomError, wecom_client
from channels.wecom.inbound import wecom_configured
from content.templating import TemplateRefused, template_context, template_render
from leads.models import Lead
from leads.services import EventInput, event_record_bulk

logger = logging.getLogger(__name__)

# How long a WelcomeCode is good for after the add event.
WELCOME_WINDOW = timedelta(seconds=20)
# The welcome code was already used, or has expired.
ALREADY_SENT = 41051
ATTEMPTS = 3
# The longest pause between two attempts (WeCom's "busy" asks for 2 s).
MAX_PAUSE = 2.0


def welcome_text(*, lead: Lead, contact_way: ContactWay | None, user_id: str) -> str:
    """The welcome text for this lead: the QR code's, else the setting's; rendered, or "" for none."""
    body = (contact_way.welcome_text if contact_way else "") or settings.WECOM_WELCOME_TEXT
    if not body.strip():
        return ""
    member = WecomMember.objects.filter(userid=user_id).first() if user_id else None
    context = template_context(lead=lead, sender=member.name if member else "")
    try:
        return template_render(body, context)
    except TemplateRefused as exc:
        logger.warning("welcome text is not a valid template (%s); sent as it is", exc)
        return body.strip()


def welcome_send(
    *,
    welcome_code: str,
    lead_id: int,
    user_id: str,
    contact_way_id: int | None,
    deadline: datetime,
    now: datetime,
) -> str:
    """Send the welcome message for one add event, before `deadline` (the add + 20 s). Returns
    "sent", "already_sent" (41051), "expired", "no_text", "not_configured", "do_not_contact" or
    "failed". A sent message is recorded as a `message_out` event."""
    if not wecom_configured():
        return "not_configured"
    remaining = (deadline - now).total_seconds()
    if remaining <= 0:
        return "expired"
    lead = Lead.objects.filter(pk=lead_id).first()
    if lead is None:
        return "failed"
    if lead.do_not_contact:
        return "do_not_contact"
    way = ContactWay.objects.filter(pk=contact_way_id).first() if contact_way_id else None
    text = welcome_text(lead=lead, contact_way=way, user_id=user_id)
    if not text:
        return "no_text"
    ends = time.monotonic() + remaining
    for attempt in range(1, ATTEMPTS + 1):
        try:
            wecom_client().call(
                "externalcontact/send_welcome_msg", {"welcome_code": welcome_code, "text": {"content": text}}
            )
        except WecomError as exc:
            if exc.errcode == ALREADY_SENT:
                return "already_sent"
            logger.warning("welcome message for lead %s refused: %s", lead_id, exc)
            return "failed"
        except RetryableError as exc:
            pause = exc.retry_after if exc.retry_after is not None else 1.0
            if attempt == ATTEMPTS or pause > MAX_PAUSE or time.monotonic() + pause >= ends:
                logger.warning("welcome message for lead %s not sent in time: %s", lead_id, exc)
                return "failed"
            time.sleep(pause)
            continue
        _welcome_record(lead_id=lead_id, welcome_code=welcome_code, user_id=user_id, text=text, now=now)
        return "sent"
    return "failed"  # pragma: no cover - the loop returns


def _welcome_record(*, lead_id: int, welcome_code: str, user_id: str, text: str, now: datetime) -> None:
    event_record_bulk(
        items=[
            EventInput(
                type="message_out",
                occurred_at=now,
                properties={"channel": "wecom", "kind": "welcome", "user_id": user_id, "text": text[:1000]},
                event_id="wecom-welcome:" + hashlib.sha256(welcome_code.encode()).hexdigest()[:40],
                lead_id=lead_id,
                identity=None,
                source="wecom",
            )
        ],
        now=now,
    )
