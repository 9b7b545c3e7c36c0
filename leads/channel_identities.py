"""The lead's channel identities that are not API identities (CONTRACT §3): the official account's
openid, its 48-hour interaction window, and the WeCom staff member who follows the lead up. The
channels' callbacks write them through these services."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q

from leads.models import Lead
from leads.pools import leads_mark_dirty


def lead_follow_user_set(*, lead_id: int, user_id: str, now: datetime, only_if_blank: bool = False) -> bool:
    """Make `user_id` the lead's WeCom follow-up member (`only_if_blank`: unless it has one)."""
    leads = Lead.objects.filter(pk=lead_id).exclude(wecom_follow_user=user_id)
    if only_if_blank:
        leads = leads.filter(wecom_follow_user="")
    if leads.update(wecom_follow_user=user_id, updated_at=now):
        leads_mark_dirty(lead_ids=[lead_id], now=now)
        return True
    return False


def lead_follow_user_clear(*, lead_id: int, user_id: str, now: datetime) -> bool:
    """The member no longer follows the lead (either side deleted the other): clear it if it was them."""
    if user_id and Lead.objects.filter(pk=lead_id, wecom_follow_user=user_id).update(
        wecom_follow_user="", updated_at=now
    ):
        leads_mark_dirty(lead_ids=[lead_id], now=now)
        return True
    return False


def lead_for_openid(*, openid: str, source: str, now: datetime) -> Lead:
    """The lead with this official-account openid, created if none has it (a follower we did not know
    yet); a lead without a source gets `source`."""
    lead = Lead.objects.filter(wechat_openid=openid).first()
    if lead is not None:
        if source and not lead.source:
            Lead.objects.filter(pk=lead.pk, source="").update(source=source, updated_at=now)
        return lead
    try:
        with transaction.atomic():
            lead = Lead.objects.create(wechat_openid=openid, source=source)
    except IntegrityError:  # another payload of the same follower created it meanwhile
        return Lead.objects.get(wechat_openid=openid)
    leads_mark_dirty(lead_ids=[lead.pk], now=now)
    return lead


def lead_oa_interaction_forward(*, lead_id: int, at: datetime) -> bool:
    """Move the lead's last official-account interaction (the 48-hour window's start) forward, never
    back (payloads may arrive out of order)."""
    newer = Q(wechat_oa_interaction_at__isnull=True) | Q(wechat_oa_interaction_at__lt=at)
    return bool(Lead.objects.filter(newer, pk=lead_id).update(wechat_oa_interaction_at=at))
