"""How a lead merge moves content rows: links, per-asset and per-tag viewers are unique per lead, so rows
of the merged lead that clash with the survivor's are folded into them instead of re-pointed."""

from __future__ import annotations

from datetime import datetime

from django.db.models import F, Model
from django.db.models.functions import Greatest

from content.models import AssetViewer, ContentAsset, TagViewer, TrackedLink, TrackedLinkAlias
from leads.models import Lead
from leads.services import lead_merge_handler


def _earliest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _latest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _fold_opens(into: TrackedLink, other: TrackedLink) -> None:
    into.opens += other.opens
    into.first_opened_at = _earliest(into.first_opened_at, other.first_opened_at)
    into.last_opened_at = _latest(into.last_opened_at, other.last_opened_at)
    into.created_at = min(into.created_at, other.created_at)


@lead_merge_handler(TrackedLink._meta.label)
def _merge_tracked_links(survivor: Lead, merged: Lead, now: datetime) -> None:
    """Links move over; a link of the same asset and touch as one of the survivor's folds into it (opens
    add up) and its token becomes an alias of it. A revoked token stays revoked."""
    own = {(link.asset_id, link.touch_id): link for link in TrackedLink.objects.filter(lead=survivor)}
    moving: list[int] = []
    for link in TrackedLink.objects.filter(lead=merged).order_by("pk"):
        kept = own.get((link.asset_id, link.touch_id))
        if kept is None:
            moving.append(link.pk)
            continue
        fields = ["opens", "first_opened_at", "last_opened_at", "created_at"]
        if kept.revoked_at is not None and link.revoked_at is None:
            # The survivor's token was revoked, the merged lead's was not: the live one is kept.
            _fold_opens(link, kept)
            kept.delete()
            link.lead = survivor
            link.save(update_fields=[*fields, "lead"])
            own[(link.asset_id, link.touch_id)] = link
            continue
        # A clashing link of the merged lead folds into the survivor's; its token lives on as an alias.
        _fold_opens(kept, link)
        kept.save(update_fields=fields)
        if link.revoked_at is None:
            TrackedLinkAlias.objects.filter(link=link).update(link=kept)
            TrackedLinkAlias.objects.create(token=link.token, link=kept, created_at=now)
        link.delete()
    TrackedLink.objects.filter(pk__in=moving).update(lead=survivor)


def _merge_viewers(model: type[Model], key: str, survivor: Lead, merged: Lead) -> list[int]:
    """Move the merged lead's viewer rows; where both leads have one for the same `key`, add the views up
    into the survivor's. Returns the keys whose two rows became one."""
    mine = {getattr(row, key): row for row in model._default_manager.filter(lead=survivor)}
    moving: list[int] = []
    folded: list[int] = []
    changed = []
    for row in model._default_manager.filter(lead=merged):
        own = mine.get(getattr(row, key))
        if own is None:
            moving.append(row.pk)
            continue
        own.views += row.views
        own.first_at = min(own.first_at, row.first_at)
        own.last_at = max(own.last_at, row.last_at)
        changed.append(own)
        folded.append(getattr(row, key))
    if folded:
        model._default_manager.filter(lead=merged, **{f"{key}__in": folded}).delete()
        model._default_manager.bulk_update(changed, ["views", "first_at", "last_at"])
    model._default_manager.filter(pk__in=moving).update(lead=survivor)
    return folded


@lead_merge_handler(AssetViewer._meta.label)
def _merge_asset_viewers(survivor: Lead, merged: Lead, now: datetime) -> None:
    """Per-asset views add up; an asset both leads viewed has one unique viewer fewer."""
    folded = _merge_viewers(AssetViewer, "asset_id", survivor, merged)
    if folded:
        ContentAsset.objects.filter(pk__in=folded).update(unique_viewers=Greatest(F("unique_viewers") - 1, 0))


@lead_merge_handler(TagViewer._meta.label)
def _merge_tag_viewers(survivor: Lead, merged: Lead, now: datetime) -> None:
    """Per-tag views add up (the unique viewers of a tag are counted from these rows)."""
    _merge_viewers(TagViewer, "tag_id", survivor, merged)
