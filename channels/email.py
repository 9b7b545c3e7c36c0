"""Email: one-click unsubscribe tokens and links, and bounces (our webhook and django-anymail's
`tracking` signal).

An unsubscribe token is a signed (lead id, channel), the same for every email and without expiry: a link
in an old email must still work.
Unsubscribing records one `unsubscribed` event {"channel": "email"} per lead (a fixed event id, so a
second click changes nothing); the dispatcher then skips the lead's email touches (`opted_out:email`).

A bounce is stored as an `InboundPayload` first (dedupe key), then: an `email_bounced` event on the lead
with that address, a hard bounce or a complaint also opts the lead out of email, and the touch the
Message-ID names moves from sent to failed (`touch.failed` in the outbox); a complaint means the message
arrived, so its touch stays.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.dispatch import receiver
from django.urls import reverse
from django.utils.timezone import now as timezone_now

from channels.models import InboundPayload
from channels.sms import StoredItem, inbound_payloads_process
from leads.models import Lead
from leads.services import EventInput, event_record_bulk
from sequences.receipts import DeliveryReceipt, touches_delivery_record

logger = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "nurture.channels.unsubscribe"
BOUNCE_TYPES = ("hard", "soft", "complaint")


# --- Unsubscribe links.


def unsubscribe_token(*, lead_id: int, channel: str = "email") -> str:
    """A URL-safe signed token naming the lead and the channel it opts out of."""
    return signing.Signer(salt=UNSUBSCRIBE_SALT).sign_object({"l": int(lead_id), "c": channel}, compress=True)


def unsubscribe_token_read(*, token: str) -> tuple[int, str] | None:
    """(lead id, channel) of a genuine token, or None for a forged or mangled one."""
    try:
        data = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("l"), int) or not isinstance(data.get("c"), str):
        return None
    return data["l"], data["c"]


def unsubscribe_url(*, lead_id: int, channel: str = "email") -> str:
    """The absolute one-click unsubscribe link (under NURTURE_PUBLIC_URL)."""
    path = reverse("unsubscribe", kwargs={"token": unsubscribe_token(lead_id=lead_id, channel=channel)})
    return settings.NURTURE_PUBLIC_URL.rstrip("/") + path


def lead_unsubscribe(*, lead_id: int, channel: str, now: datetime, source: str = "unsubscribe_link") -> bool:
    """Opt the lead out of one channel; True when this call recorded it (False: already, or no lead)."""
    event = EventInput(
        type="unsubscribed",
        occurred_at=now,
        properties={"channel": channel, "via": source},
        event_id=f"unsubscribe:{channel}:{lead_id}",
        lead_id=lead_id,
        identity=None,
        source=channel,
    )
    (status,) = event_record_bulk(items=[event], now=now)
    return status.get("status") == "created"


# --- Message-IDs.


def email_message_domain() -> str:
    return urlsplit(settings.NURTURE_PUBLIC_URL).hostname or "localhost"


def email_message_id(*, idempotency_key: str) -> str:
    """The Message-ID of a touch's email: derived from its idempotency key, so a bounce names the touch."""
    return f"<{idempotency_key}@{email_message_domain()}>"


def email_key_of_message_id(message_id: str) -> str | None:
    """The idempotency key inside one of our Message-IDs, or None for any other."""
    value = (message_id or "").strip().strip("<>")
    local, at, domain = value.rpartition("@")
    if not at or domain != email_message_domain() or not local:
        return None
    return local


# --- Bounces.


@dataclass(frozen=True)
class Bounce:
    email: str
    kind: str  # hard | soft | complaint | unsubscribe
    message_id: str = ""
    provider: str = "webhook"


def email_bounces_record(*, bounces: Sequence[Bounce], raw: str, now: datetime) -> int:
    """Store bounces (once each) and act on them; returns the bounces acted on."""
    items = [
        {"email": b.email.strip().lower(), "type": b.kind, "message_id": b.message_id, "provider": b.provider}
        for b in bounces
    ]
    return inbound_payloads_process(
        source=InboundPayload.Source.EMAIL, kind="bounce", items=items, raw=raw, now=now, act=_bounces_act
    )


def _bounces_act(stored: list[StoredItem], now: datetime) -> None:
    emails = {s.body["email"] for s in stored if s.body.get("email")}
    leads = dict(Lead.objects.filter(email__in=emails).values_list("email", "pk"))
    events: list[EventInput | None] = []
    receipts: list[DeliveryReceipt] = []
    for item in stored:
        body = item.body
        kind, message_id = body.get("type", ""), body.get("message_id", "")
        lead_id = leads.get(body.get("email", ""))
        if lead_id is not None:
            if kind != "unsubscribe":
                props = {"type": kind, "email": body["email"], "message_id": message_id}
                events.append(
                    EventInput("email_bounced", now, props, item.dedupe_key[:128], lead_id, None, "email")
                )
            if kind in ("hard", "complaint", "unsubscribe"):
                optout = {"channel": "email", "via": kind}
                key = f"unsubscribe:email:{lead_id}"
                events.append(EventInput("unsubscribed", now, optout, key, lead_id, None, "email"))
        if message_id and kind in ("hard", "soft"):
            key = email_key_of_message_id(message_id)
            receipts.append(
                DeliveryReceipt(
                    delivered=False,
                    idempotency_key=key,
                    provider_ref=None if key else message_id,
                    error=f"{kind} bounce",
                )
            )
    if events:
        event_record_bulk(items=events, now=now)
    if receipts:
        touches_delivery_record(channel="email", receipts=receipts, at=now)


# django-anymail's tracking webhooks (mounted at /channels/email/anymail/) → the same bounce handling.
ANYMAIL_KINDS = {
    "bounced": "hard",
    "rejected": "hard",
    "complained": "complaint",
    "unsubscribed": "unsubscribe",
}


def email_anymail_tracking(*, event: Any, esp_name: str, now: datetime | None = None) -> int:
    """One anymail tracking event; bounced/rejected/complained/unsubscribed are recorded as bounces."""
    kind = ANYMAIL_KINDS.get(getattr(event, "event_type", ""))
    if kind is None or not getattr(event, "recipient", ""):
        return 0
    bounce = Bounce(
        email=event.recipient, kind=kind, message_id=event.message_id or "", provider=esp_name or "anymail"
    )
    raw = str(getattr(event, "esp_event", ""))[:10_000]
    return email_bounces_record(bounces=[bounce], raw=raw, now=now or timezone_now())


try:  # anymail is a dependency; the guard only keeps this module importable without it
    from anymail.signals import tracking
except ImportError:  # pragma: no cover
    tracking = None

if tracking is not None:

    @receiver(tracking, dispatch_uid="nurture.channels.email.tracking")
    def _on_anymail_tracking(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
        email_anymail_tracking(event=event, esp_name=esp_name)
