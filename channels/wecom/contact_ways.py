"""Channel QR codes (渠道活码): `externalcontact/add_contact_way` and friends.

One ContactWay per channel or campaign; its `state` comes back with every add event made through it,
and names the lead's acquisition channel (`source`). A single staff member makes a type-1 (单人) code,
several a type-2 (多人) code; scene 2 is a QR code. WeCom cannot change a code's type, so a code whose
staff goes from one to several (or back) is deleted and created again, with a new QR image.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.utils.timezone import now as timezone_now

from channels.models import ContactWay
from channels.wecom.client import WecomError, wecom_client
from channels.wecom.inbound import wecom_configured
from leads.models import Lead

logger = logging.getLogger(__name__)

SINGLE, MULTI = 1, 2
QR_SCENE = 2


class NotConfigured(Exception):
    """WECOM_CORP_ID / WECOM_SECRET are not set: nothing can be created in WeCom."""


def _type(contact_way: ContactWay) -> int:
    return SINGLE if len(contact_way.user_ids or []) == 1 else MULTI


def _remark(contact_way: ContactWay) -> str:
    return (contact_way.campaign or contact_way.name)[:30]


def _fields(contact_way: ContactWay) -> dict[str, Any]:
    return {
        "remark": _remark(contact_way),
        "skip_verify": contact_way.skip_verify,
        "state": contact_way.state,
        "user": list(contact_way.user_ids or []),
    }


def contact_way_sync(*, contact_way: ContactWay, now: datetime | None = None) -> ContactWay:
    """Make WeCom's QR code match the row: create it (`add_contact_way`, storing config_id and the QR
    image), update it (`update_contact_way`), or delete it when the row is inactive. WeCom's refusal is
    stored in `error` and raised (WecomError / RetryableError); NotConfigured without the settings."""
    now = now or timezone_now()
    if not wecom_configured():
        raise NotConfigured("WeCom is not configured")
    if not contact_way.active:
        contact_way_unpublish(contact_way=contact_way, now=now)
        return contact_way
    if not contact_way.user_ids:
        raise ValueError("a channel QR code needs at least one staff UserID")
    client = wecom_client()
    try:
        if contact_way.config_id and _type_in_wecom(contact_way) not in (None, _type(contact_way)):
            # The staff went from one member to several or back: WeCom keeps the type, so start again.
            client.call("externalcontact/del_contact_way", {"config_id": contact_way.config_id})
            contact_way.config_id = contact_way.qr_code = ""
        if contact_way.config_id:
            client.call(
                "externalcontact/update_contact_way",
                {"config_id": contact_way.config_id, **_fields(contact_way)},
            )
        else:
            answer = client.call(
                "externalcontact/add_contact_way",
                {"type": _type(contact_way), "scene": QR_SCENE, **_fields(contact_way)},
            )
            contact_way.config_id = str(answer.get("config_id") or "")
            contact_way.qr_code = str(answer.get("qr_code") or "")
    except Exception as exc:
        contact_way.error = str(exc)[:2000]
        ContactWay.objects.filter(pk=contact_way.pk).update(
            error=contact_way.error, config_id=contact_way.config_id, qr_code=contact_way.qr_code
        )
        raise
    contact_way.error = ""
    contact_way.synced_at = now
    ContactWay.objects.filter(pk=contact_way.pk).update(
        config_id=contact_way.config_id, qr_code=contact_way.qr_code, error="", synced_at=now
    )
    return contact_way


def _type_in_wecom(contact_way: ContactWay) -> int | None:
    """The code's type as WeCom has it (`get_contact_way`), or None when WeCom does not say."""
    try:
        answer = wecom_client().call("externalcontact/get_contact_way", {"config_id": contact_way.config_id})
    except WecomError as exc:
        logger.info("get_contact_way %s: %s", contact_way.config_id, exc)
        return None
    kind = (answer.get("contact_way") or {}).get("type")
    return int(kind) if kind in (SINGLE, MULTI) else None


def contact_way_unpublish(*, contact_way: ContactWay, now: datetime | None = None) -> None:
    """Delete the QR code in WeCom (`del_contact_way`); the row stays (its leads keep their source)."""
    if not contact_way.config_id:
        return
    if not wecom_configured():
        raise NotConfigured("WeCom is not configured")
    wecom_client().call("externalcontact/del_contact_way", {"config_id": contact_way.config_id})
    contact_way.config_id = contact_way.qr_code = contact_way.error = ""
    contact_way.synced_at = now or timezone_now()
    ContactWay.objects.filter(pk=contact_way.pk).update(
        config_id="", qr_code="", error="", synced_at=contact_way.synced_at
    )


def contact_way_delete(*, contact_way: ContactWay) -> str:
    """Delete the row and its QR code in WeCom. Returns a warning when WeCom could not delete the code
    (it then keeps working in WeCom until removed there), else ""."""
    warning = ""
    if contact_way.config_id:
        try:
            contact_way_unpublish(contact_way=contact_way)
        except Exception as exc:
            warning = f"{contact_way.state}: {exc}"
    contact_way.delete()
    return warning


def contact_ways_with_leads(queryset: QuerySet[ContactWay]) -> QuerySet[ContactWay]:
    """Annotate `leads_acquired`: the leads whose source is the code's and whose WeCom state is its
    state (one statement for the whole list; the source index narrows each count)."""
    acquired = (
        Lead.objects.annotate(wecom_state=KT("properties__wecom_state"))
        .filter(source=OuterRef("source"), wecom_state=OuterRef("state"))
        .order_by()
        .values("source")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return queryset.annotate(
        leads_acquired=Coalesce(Subquery(acquired, output_field=IntegerField()), Value(0))
    )
