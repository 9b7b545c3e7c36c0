"""What the official account's callbacks do, after the payload is stored.

`wechat_oa_payload_receive` stores a verified payload under its dedupe key (a replay stores nothing and
does nothing) and enqueues `wechat_oa_payload_process_task` when the transaction commits; the tick's
`channels.inbound.inbound_process_pending` picks up payloads whose task was lost or failed. Processing:

- `subscribe`: the lead is found or created by openid (`Lead.wechat_openid`, unique); a `qrscene_`
  EventKey (a parametric QR code) names its source; event `wechat_subscribed`; the 48-hour window opens;
- `unsubscribe`: event `unsubscribed` {"channel": "wechat_oa"} (the per-channel opt-out);
- `TEMPLATESENDJOBFINISH`: the template touch with that msgid becomes delivered, or failed;
- text, image, voice … messages: event `message_in` {"channel": "wechat_oa", "text": …} (which moves
  `last_inbound_at`, read by the silence trigger and the auto-tag rules) and the window opens;
- `CLICK`, `VIEW`, `SCAN`: the window opens.

Every event is recorded with the payload's dedupe key as its `event_id`, so processing twice records
nothing twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from django.db import transaction
from django.db.models import F
from django.utils.timezone import now as timezone_now

from channels.models import InboundPayload
from leads.channel_identities import lead_for_openid, lead_oa_interaction_forward
from leads.models import Lead
from leads.services import EventInput, event_record_bulk

logger = logging.getLogger(__name__)

SOURCE = InboundPayload.Source.WECHAT_OA
# Events that open the 48-hour window (every message does too).
WINDOW_EVENTS = frozenset({"subscribe", "click", "view", "scan"})


def wechat_oa_dedupe_key(body: dict[str, Any]) -> str:
    """Messages by their MsgId; events by sender, time and event (and a template receipt's MsgID)."""
    if body.get("MsgType") != "event" and body.get("MsgId"):
        return f"wechat_oa:msg:{body['MsgId']}"
    parts = [body.get("FromUserName") or "", body.get("CreateTime") or "", body.get("Event") or ""]
    if body.get("MsgID"):
        parts.append(body["MsgID"])
    return "wechat_oa:event:" + ":".join(str(p) for p in parts)


def _kind(body: dict[str, Any]) -> str:
    msgtype = str(body.get("MsgType") or "")
    if msgtype == "event":
        return f"event:{str(body.get('Event') or '').lower()}"[:64]
    return msgtype[:64]


def wechat_oa_payload_receive(*, body: dict[str, Any], raw: str, now: datetime) -> InboundPayload | None:
    """Store a verified payload once; act on it in a task after commit. None: a replay, ignored."""
    from channels.inbound import inbound_payload_store

    payload, created = inbound_payload_store(
        source=SOURCE, kind=_kind(body), dedupe_key=wechat_oa_dedupe_key(body), body=body, raw=raw, now=now
    )
    return payload if created else None


@shared_task(ignore_result=True, acks_late=True)
def wechat_oa_payload_process_task(payload_id: int) -> None:
    """Act on one stored official-account payload (safe to run twice)."""
    wechat_oa_payload_process(payload_id=payload_id, now=timezone_now())


def wechat_oa_payload_process(*, payload_id: int, now: datetime) -> bool:
    """Claim the payload if it is still unprocessed (SKIP LOCKED) and act on it; True if it was done."""
    with transaction.atomic():
        payload = (
            InboundPayload.objects.select_for_update(skip_locked=True)
            .filter(pk=payload_id, source=SOURCE, processed_at__isnull=True)
            .first()
        )
        if payload is None:
            return False
        return wechat_oa_process(payload=payload, now=now)


def wechat_oa_process(*, payload: InboundPayload, now: datetime) -> bool:
    """Act on a claimed (locked) payload and mark it processed; a failure is kept on the payload (its
    error, one more attempt) for the next pending pass. Also what a shared inbound step may call."""
    try:
        with transaction.atomic():
            wechat_oa_act(body=payload.body, event_id=payload.dedupe_key, now=now)
    except Exception as exc:
        logger.exception("official-account payload %s failed", payload.pk)
        InboundPayload.objects.filter(pk=payload.pk).update(
            attempts=F("attempts") + 1, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        return False
    InboundPayload.objects.filter(pk=payload.pk).update(
        processed_at=now, attempts=F("attempts") + 1, error=""
    )
    return True


# --- Acting.


def _created_at(body: dict[str, Any], now: datetime) -> datetime:
    try:
        return (
            datetime.fromtimestamp(int(body.get("CreateTime") or 0), tz=UTC)
            if body.get("CreateTime")
            else now
        )
    except (TypeError, ValueError, OverflowError):
        return now


def wechat_oa_act(*, body: dict[str, Any], event_id: str, now: datetime) -> str:
    """Do what one decrypted payload says; returns what it was (for logs and tests)."""
    openid = str(body.get("FromUserName") or "")
    if not openid:
        return "ignored"
    at = _created_at(body, now)
    msgtype = str(body.get("MsgType") or "")
    event = str(body.get("Event") or "").lower() if msgtype == "event" else ""
    if event == "templatesendjobfinish":
        return wechat_oa_template_receipt(
            openid=openid, msgid=str(body.get("MsgID") or ""), status=str(body.get("Status") or ""), now=now
        )
    if event == "unsubscribe":
        lead = Lead.objects.filter(wechat_openid=openid).first()
        if lead is not None:
            _event(lead, "unsubscribed", at, {"channel": "wechat_oa"}, event_id, now)
        return "unsubscribed"
    if msgtype == "event" and event not in WINDOW_EVENTS:
        return "ignored"  # LOCATION reports and the like
    scene = ""
    key = str(body.get("EventKey") or "")
    if event == "subscribe" and key.startswith("qrscene_"):
        scene = key.removeprefix("qrscene_")[:64]
    lead = lead_for_openid(openid=openid, source=scene or "wechat_oa", now=now)
    lead_oa_interaction_forward(lead_id=lead.pk, at=at)
    if event == "subscribe":
        _event(lead, "wechat_subscribed", at, {"channel": "wechat_oa", "scene": scene}, event_id, now)
        return "subscribed"
    if msgtype == "event":
        return "interaction"
    text = str(body.get("Content") or body.get("Recognition") or "")
    properties = {"channel": "wechat_oa", "text": text, "msgtype": msgtype}
    _event(lead, "message_in", at, properties, event_id, now)
    return "message_in"


def _event(
    lead: Lead, type: str, at: datetime, properties: dict[str, Any], event_id: str, now: datetime
) -> None:
    event_record_bulk(
        items=[
            EventInput(
                type=type,
                occurred_at=at,
                properties=properties,
                event_id=event_id[:128],
                lead_id=lead.pk,
                identity=None,
                source="wechat_oa",
            )
        ],
        now=now,
    )


def wechat_oa_template_receipt(*, openid: str, msgid: str, status: str, now: datetime) -> str:
    """TEMPLATESENDJOBFINISH: `success` → the sent touch with this msgid is delivered; `failed:user
    block` (the user turned the account's messages off) or `failed: system failed` → failed, with
    `touch.failed` in the outbox (sequences.receipts: conditional updates, so a replayed or late receipt
    changes nothing)."""
    from sequences.receipts import touch_delivery_record

    if not msgid:
        return "ignored"
    delivered = status.strip().lower() == "success"
    touch_delivery_record(
        channel="wechat_oa",
        provider_ref=msgid,
        delivered=delivered,
        error="" if delivered else f"template {status}",
        at=now,
    )
    return "delivered" if delivered else "failed"
