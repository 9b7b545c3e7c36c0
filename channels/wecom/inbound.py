"""What WeCom's callbacks do: store each payload once, then act on it exactly once.

`wecom_payload_receive` (the view) stores the decrypted payload under a dedupe key made from its
content, so a replay or one of WeCom's retries is a no-op, and enqueues a task on commit.
`wecom_payload_process` (the task; the tick for payloads whose task was lost) claims the row and applies
the event's effects and `processed_at` in one transaction: a crash rolls everything back and the payload
is processed again later. Calls to WeCom (the contact's details, the welcome message) are made outside
that transaction.

客户联系 events (`Event` = `change_external_contact`, by `ChangeType`):
- `add_external_contact` / `add_half_external_contact`: link or create the lead by `ExternalUserID`,
  record `wecom_added` at `CreateTime`, the staff member `UserID` follows it up, `State` (the channel QR
  code) is the acquisition channel; the welcome message goes out with the `WelcomeCode`.
- `edit_external_contact`: refresh the details (`wecom_edited`).
- `del_external_contact` (staff removed the customer) / `del_follow_user` (the customer deleted the staff
  member): `wecom_deleted` with `by` = staff / customer.
Any other payload is stored and marked processed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils.timezone import now as timezone_now

from channels.models import ContactWay, InboundPayload
from leads.channel_identities import lead_follow_user_clear, lead_follow_user_set
from leads.models import Lead
from leads.services import EventInput, event_record_bulk, lead_tags_change, lead_update, lead_upsert

logger = logging.getLogger(__name__)

CONTACT_EVENT = "change_external_contact"


@dataclass
class Outcome:
    """What processing one payload did; `welcome_code` is set when a welcome message is to go out."""

    lead_id: int | None = None
    note: str = ""
    welcome_code: str = ""
    contact_way_id: int | None = None


def wecom_configured() -> bool:
    """Whether the server API can be called (WECOM_CORP_ID and WECOM_SECRET are set)."""
    return bool(settings.WECOM_CORP_ID and settings.WECOM_SECRET)


# --- Receiving.


def wecom_dedupe_key(body: dict[str, Any]) -> str:
    """The same payload (a replay, WeCom's retry) gives the same key, whatever the XML's whitespace."""
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "wecom:" + hashlib.sha256(canonical.encode()).hexdigest()


def wecom_payload_kind(body: dict[str, Any]) -> str:
    return str(body.get("ChangeType") or body.get("Event") or body.get("MsgType") or "")[:64]


def wecom_payload_receive(*, body: dict[str, Any], raw: str, now: datetime) -> tuple[InboundPayload, bool]:
    """Store a decrypted payload once and enqueue its processing on commit (channels.inbound)."""
    from channels.inbound import inbound_payload_store

    return inbound_payload_store(
        source=InboundPayload.Source.WECOM,
        kind=wecom_payload_kind(body),
        dedupe_key=wecom_dedupe_key(body),
        body=body,
        raw=raw,
        now=now,
    )


# --- Processing.


def wecom_payload_process(*, payload_id: int, now: datetime | None = None) -> str:
    """Apply one stored payload's effects exactly once: "processed", "done" (already processed, or
    another worker has it) or "failed" (rolled back; attempts and error recorded, retried by the tick)."""
    now = now or timezone_now()
    payload = InboundPayload.objects.filter(
        pk=payload_id, source=InboundPayload.Source.WECOM, processed_at__isnull=True
    ).first()
    if payload is None:
        return "done"
    body = payload.body if isinstance(payload.body, dict) else {}
    handler = _HANDLERS.get(payload.kind) if body.get("Event") == CONTACT_EVENT else None
    # Read from WeCom before the transaction: no row is locked while an HTTP call waits.
    details = _contact_details(body) if handler in (_contact_added, _contact_edited) else None
    try:
        with transaction.atomic():
            claimed = (
                InboundPayload.objects.select_for_update(skip_locked=True)
                .filter(pk=payload_id, processed_at__isnull=True)
                .first()
            )
            if claimed is None:
                return "done"
            outcome = handler(payload=claimed, body=body, details=details, now=now) if handler else Outcome()
            claimed.processed_at = now
            claimed.attempts += 1
            claimed.error = outcome.note
            claimed.save(update_fields=["processed_at", "attempts", "error"])
    except Exception as exc:
        logger.exception("WeCom payload %s failed; the tick tries it again", payload_id)
        InboundPayload.objects.filter(pk=payload_id, processed_at__isnull=True).update(
            attempts=F("attempts") + 1, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        return "failed"
    if outcome.welcome_code and outcome.lead_id:
        from channels.wecom.welcome import welcome_send

        welcome_send(
            welcome_code=outcome.welcome_code,
            lead_id=outcome.lead_id,
            user_id=str(body.get("UserID") or ""),
            contact_way_id=outcome.contact_way_id,
            deadline=claimed.received_at + _welcome_window(),
            now=now,
        )
    return "processed"


def _welcome_window() -> timedelta:
    from channels.wecom.welcome import WELCOME_WINDOW

    return WELCOME_WINDOW


# --- The contact's details (`externalcontact/get`).


@dataclass
class Details:
    name: str = ""
    company: str = ""
    unionid: str = ""
    remark: str = ""
    follow_users: tuple[str, ...] = ()


def _contact_details(body: dict[str, Any]) -> Details | None:
    """The customer's name, company and unionid from WeCom, or None (not configured, or WeCom failed:
    the event is processed without them)."""
    external_userid = str(body.get("ExternalUserID") or "")
    if not external_userid or not wecom_configured():
        return None
    from channels.wecom.client import wecom_client

    try:
        answer = wecom_client().call(
            "externalcontact/get", method="GET", params={"external_userid": external_userid}
        )
    except Exception as exc:
        logger.warning("externalcontact/get for %s failed: %s", external_userid, exc)
        return None
    contact = answer.get("external_contact") or {}
    follow = [f for f in answer.get("follow_user") or [] if isinstance(f, dict)]
    mine = next((f for f in follow if f.get("userid") == body.get("UserID")), {})
    return Details(
        name=str(contact.get("name") or ""),
        company=str(
            contact.get("corp_full_name") or contact.get("corp_name") or mine.get("remark_corp_name") or ""
        ),
        unionid=str(contact.get("unionid") or ""),
        remark=str(mine.get("remark") or ""),
        follow_users=tuple(str(f.get("userid")) for f in follow if f.get("userid")),
    )


# --- Event handlers: run inside the claiming transaction.

Handler = Callable[..., Outcome]


def _created_at(body: dict[str, Any], payload: InboundPayload) -> datetime:
    try:
        return datetime.fromtimestamp(int(body.get("CreateTime")), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return payload.received_at


def _lead_link(
    *, external_userid: str, details: Details | None, properties: dict[str, Any], now: datetime
) -> Lead:
    """Link or create the lead of a WeCom contact; a unionid from WeCom may merge it with the lead of the
    same person from WeChat. Name and company from WeCom fill only what is blank."""
    data: dict[str, Any] = {"wecom_external_userid": external_userid}
    if details and details.unionid:
        data["wechat_unionid"] = details.unionid
    if details and details.remark:
        properties = {**properties, "wecom_remark": details.remark}
    if properties:
        data["properties"] = properties
    lead = lead_upsert(data=data, why="wecom contact", now=now).lead
    if details:
        blanks = {
            field: value
            for field, value in (("name", details.name), ("company", details.company))
            if value and not getattr(lead, field)
        }
        if blanks:
            lead = lead_update(lead=lead, data=blanks, now=now)
    return lead


def _event(
    *,
    payload: InboundPayload,
    lead_id: int,
    type: str,
    properties: dict[str, Any],
    body: dict[str, Any],
    now: datetime,
) -> None:
    """Record the payload's lead event once: its event_id is the payload's dedupe key."""
    event_record_bulk(
        items=[
            EventInput(
                type=type,
                occurred_at=_created_at(body, payload),
                properties=properties,
                event_id=payload.dedupe_key,
                lead_id=lead_id,
                identity=None,
                source="wecom",
            )
        ],
        now=now,
    )


def _contact_added(
    *, payload: InboundPayload, body: dict[str, Any], details: Details | None, now: datetime
) -> Outcome:
    external_userid = str(body.get("ExternalUserID") or "")
    if not external_userid:
        return Outcome(note="no ExternalUserID")
    user_id = str(body.get("UserID") or "")
    state = str(body.get("State") or "")
    way = ContactWay.objects.filter(state=state).first() if state else None
    lead = _lead_link(
        external_userid=external_userid,
        details=details,
        properties={"wecom_state": state} if state else {},
        now=now,
    )
    if state and not lead.source:
        lead = lead_update(lead=lead, data={"source": way.source if way else state}, now=now)
    if way and way.tags:
        lead_tags_change(lead=lead, add=way.tags, source="wecom", now=now)
    if user_id:
        lead_follow_user_set(lead_id=lead.pk, user_id=user_id, now=now)
    properties = {"user_id": user_id, "change_type": payload.kind}
    if state:
        properties["state"] = state
    _event(payload=payload, lead_id=lead.pk, type="wecom_added", properties=properties, body=body, now=now)
    return Outcome(
        lead_id=lead.pk,
        welcome_code=str(body.get("WelcomeCode") or ""),
        contact_way_id=way.pk if way else None,
    )


def _contact_edited(
    *, payload: InboundPayload, body: dict[str, Any], details: Details | None, now: datetime
) -> Outcome:
    external_userid = str(body.get("ExternalUserID") or "")
    if not external_userid:
        return Outcome(note="no ExternalUserID")
    user_id = str(body.get("UserID") or "")
    lead = _lead_link(external_userid=external_userid, details=details, properties={}, now=now)
    if user_id:
        lead_follow_user_set(lead_id=lead.pk, user_id=user_id, now=now, only_if_blank=True)
    _event(
        payload=payload,
        lead_id=lead.pk,
        type="wecom_edited",
        properties={"user_id": user_id},
        body=body,
        now=now,
    )
    return Outcome(lead_id=lead.pk)


def _removed(by: str) -> Handler:
    def handler(
        *, payload: InboundPayload, body: dict[str, Any], details: Details | None, now: datetime
    ) -> Outcome:
        external_userid = str(body.get("ExternalUserID") or "")
        lead_id = (
            Lead.objects.filter(wecom_external_userid=external_userid).values_list("pk", flat=True).first()
            if external_userid
            else None
        )
        if lead_id is None:
            return Outcome(note="no lead with this ExternalUserID")
        user_id = str(body.get("UserID") or "")
        properties = {"by": by, "userid": user_id}
        if body.get("Source"):
            properties["reason"] = str(body["Source"])  # e.g. DELETE_BY_TRANSFER
        _event(
            payload=payload, lead_id=lead_id, type="wecom_deleted", properties=properties, body=body, now=now
        )
        lead_follow_user_clear(lead_id=lead_id, user_id=user_id, now=now)
        return Outcome(lead_id=lead_id)

    return handler


_HANDLERS: dict[str, Handler] = {
    "add_external_contact": _contact_added,
    "add_half_external_contact": _contact_added,
    "edit_external_contact": _contact_edited,
    "del_external_contact": _removed("staff"),
    "del_follow_user": _removed("customer"),
}
