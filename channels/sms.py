"""SMS receipts and replies pushed by the providers (Aliyun SmsReport / SmsUp, Tencent Cloud status and
reply callbacks).

Every pushed item is stored first as an `InboundPayload` under a dedupe key (a hash of the item), then
claimed and acted on: a replay finds its payloads processed and changes nothing; a push whose processing
failed is processed again when the provider retries it. Status reports move the touch they name
(`sequences.receipts`); a reply is a `message_in` event, and an opt-out word (退订, TD, R …) also an
`unsubscribed` event for the sms channel, which the dispatcher honours.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import F

from channels.adapters.sms import sms_mainland_number
from channels.models import InboundPayload
from leads.models import Lead
from leads.services import EventInput, event_record_bulk
from sequences.receipts import DeliveryReceipt, touches_delivery_record

logger = logging.getLogger(__name__)

CHINA = ZoneInfo("Asia/Shanghai")
ALIYUN = InboundPayload.Source.SMS_ALIYUN
TENCENT = InboundPayload.Source.SMS_TENCENT
REPORT, REPLY = "report", "reply"
_PUNCTUATION = " \t\r\n。.!！,，、【】[]()（）\"'“”‘’"


@dataclass(frozen=True)
class StoredItem:
    payload_id: int
    dedupe_key: str
    body: dict[str, Any]


def payload_dedupe_key(*, source: str, kind: str, item: Any) -> str:
    """The same pushed item always has the same key (its canonical JSON, hashed)."""
    canonical = json.dumps(item, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{source}:{kind}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def inbound_payloads_process(
    *,
    source: str,
    kind: str,
    items: Sequence[dict[str, Any]],
    raw: str,
    now: datetime,
    act: Callable[[list[StoredItem], datetime], None],
) -> int:
    """Store each item (once, by dedupe key), then `act` on those not processed yet, in one transaction
    with their `processed_at`. Returns how many were acted on. If `act` raises, the payloads stay
    unprocessed with the error noted, and the error propagates (the provider retries the push)."""
    keyed = {payload_dedupe_key(source=source, kind=kind, item=item): item for item in items}
    if not keyed:
        return 0
    # Each body holds its item; the raw text is kept only when it is that one item.
    single = raw[:100_000] if len(keyed) == 1 else ""
    InboundPayload.objects.bulk_create(
        [
            InboundPayload(source=source, kind=kind, dedupe_key=key, received_at=now, body=item, raw=single)
            for key, item in keyed.items()
        ],
        ignore_conflicts=True,
    )
    try:
        with transaction.atomic():
            pending = list(
                InboundPayload.objects.select_for_update(skip_locked=True)
                .filter(dedupe_key__in=list(keyed), processed_at__isnull=True)
                .values_list("pk", "dedupe_key", "body")
            )
            if not pending:
                return 0
            act([StoredItem(pk, key, body) for pk, key, body in pending], now)
            InboundPayload.objects.filter(pk__in=[p[0] for p in pending]).update(
                processed_at=now, attempts=F("attempts") + 1, error=""
            )
    except Exception as exc:
        InboundPayload.objects.filter(dedupe_key__in=list(keyed), processed_at__isnull=True).update(
            attempts=F("attempts") + 1, error=f"{exc.__class__.__name__}: {exc}"[:2000]
        )
        raise
    return len(pending)


# --- Status reports.


def _aliyun_receipt(body: dict[str, Any]) -> DeliveryReceipt:
    delivered = body.get("success") in (True, "true", "True", 1)
    error = "" if delivered else f"{body.get('err_code', '')} {body.get('err_msg', '')}".strip()
    return DeliveryReceipt(
        delivered=delivered,
        idempotency_key=str(body.get("out_id") or "") or None,
        provider_ref=str(body.get("biz_id") or "") or None,
        error=error,
    )


def _tencent_receipt(body: dict[str, Any]) -> DeliveryReceipt:
    delivered = str(body.get("report_status", "")).upper() == "SUCCESS"
    error = "" if delivered else f"{body.get('errmsg', '')} {body.get('description', '')}".strip()
    return DeliveryReceipt(delivered=delivered, provider_ref=str(body.get("sid") or "") or None, error=error)


def sms_receipts_record(*, source: str, items: Sequence[dict[str, Any]], raw: str, now: datetime) -> int:
    """Store a pushed list of status reports and move the touches they name; returns items acted on."""
    parse = _aliyun_receipt if source == ALIYUN else _tencent_receipt

    def act(stored: list[StoredItem], at: datetime) -> None:
        touches_delivery_record(channel="sms", receipts=[parse(s.body) for s in stored], at=at)

    return inbound_payloads_process(source=source, kind=REPORT, items=items, raw=raw, now=now, act=act)


# --- Replies (upstream messages).


def sms_is_opt_out(text: str) -> bool:
    """Whether a reply is one of the opt-out words (SMS_OPT_OUT_REPLIES), whatever the case or dressing."""
    words = {w.strip().upper() for w in settings.SMS_OPT_OUT_REPLIES if w.strip()}
    return (text or "").strip(_PUNCTUATION).upper() in words


def _reply_fields(source: str, body: dict[str, Any], now: datetime) -> tuple[str | None, str, datetime]:
    """(mainland number, text, sent at) of a reply in either provider's shape."""
    if source == ALIYUN:
        number, text, when = body.get("phone_number"), body.get("content"), body.get("send_time")
    else:
        number, text, when = body.get("mobile"), body.get("text"), body.get("time")
    at = now
    try:
        if isinstance(when, int | float) or (isinstance(when, str) and when.isdigit()):
            at = datetime.fromtimestamp(int(when), tz=UTC)
        elif isinstance(when, str) and when:
            at = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
    except (ValueError, OverflowError):
        at = now
    return sms_mainland_number(str(number or "")), str(text or ""), min(at, now)


def sms_replies_record(*, source: str, items: Sequence[dict[str, Any]], raw: str, now: datetime) -> int:
    """Store pushed replies; each from a known lead becomes `message_in` (channel sms), and an opt-out
    word also `unsubscribed` {"channel": "sms"}. Returns items acted on."""
    provider = "aliyun" if source == ALIYUN else "tencent"

    def act(stored: list[StoredItem], at: datetime) -> None:
        fields = [(s, *_reply_fields(source, s.body, at)) for s in stored]
        phones = {f"+86{number}" for _, number, _, _ in fields if number}
        leads = dict(Lead.objects.filter(phone__in=phones).values_list("phone", "pk"))
        events: list[EventInput | None] = []
        unknown = []
        for item, number, text, sent_at in fields:
            lead_id = leads.get(f"+86{number}") if number else None
            if lead_id is None:
                unknown.append(item.payload_id)
                continue
            props = {"channel": "sms", "text": text[:2000], "provider": provider}
            events.append(
                EventInput("message_in", sent_at, props, item.dedupe_key[:128], lead_id, None, "sms")
            )
            if sms_is_opt_out(text):
                optout = {"channel": "sms", "reply": text[:100]}
                key = f"{item.dedupe_key}:unsub"[:128]
                events.append(EventInput("unsubscribed", sent_at, optout, key, lead_id, None, "sms"))
        if events:
            event_record_bulk(items=events, now=at)
        if unknown:
            logger.info("sms replies from numbers of no lead: payloads %s", unknown)

    return inbound_payloads_process(source=source, kind=REPLY, items=items, raw=raw, now=now, act=act)
