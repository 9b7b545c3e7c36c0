"""Writes to leads: upsert by identity (single and bulk), merge, stage write-back, tags, events.

Input reaching these services is already validated and normalised (see `leads.api` serializers):
identities are E.164 phones / lower-cased emails, unknown keys are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils.timezone import now as timezone_now

from leads.bulk import rows_insert, rows_update
from leads.models import (
    IDENTITY_FIELDS,
    Event,
    Lead,
    LeadMerge,
    LeadTag,
    PoolMembership,
    RecycleReason,
    Stage,
    StageChange,
)
from leads.pools import leads_mark_dirty
from leads.tagging import lead_tags_stamp, tag_name_normalize, tags_get_or_create
from nurture.outbox import outbox_put

logger = logging.getLogger(__name__)

# Lead fields an upsert may write besides the identities.
PROFILE_FIELDS: tuple[str, ...] = (
    "name",
    "company",
    "title",
    "industry",
    "company_size",
    "source",
    "consent",
    "consent_at",
    "consent_version",
    "do_not_contact",
    "owner",
    "bant_budget",
    "bant_authority",
    "bant_need",
    "bant_timeline",
)
WRITABLE_FIELDS: tuple[str, ...] = IDENTITY_FIELDS + PROFILE_FIELDS + ("stage", "properties")

# Funnel order for merges: the survivor keeps the further stage.
STAGE_RANK = {
    Stage.RL: 0,
    Stage.RECYCLED: 1,
    Stage.MIL: 2,
    Stage.MQL: 3,
    Stage.SQL: 4,
    Stage.LOST: 5,
    Stage.WON: 6,
}

# Event types that are a signal from the lead itself (silence is measured from the last of these).
INBOUND_EVENT_TYPES = frozenset(
    {
        "registered",
        "form_submitted",
        "wecom_added",
        "wechat_subscribed",
        "message_in",
        "content_viewed",
        "link_clicked",
        "webinar_registered",
        "webinar_attended",
        "trial_started",
        "email_opened",
    }
)


class IdentityConflict(Exception):
    """The payload's identities cannot be reconciled (API: 409)."""


@dataclass
class UpsertResult:
    lead: Lead
    created: bool
    merged_ids: list[int] = field(default_factory=list)


@dataclass
class BulkItemResult:
    index: int
    status: str  # created | updated | error
    id: int | None = None
    errors: dict[str, Any] | None = None
    merged_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.id is not None:
            out["id"] = self.id
        if self.errors:
            out["errors"] = self.errors
        if self.merged_ids:
            out["merged_ids"] = self.merged_ids
        return out


# --- Relations of later issues register how a merge moves them (default: re-point the foreign key).
MergeHandler = Callable[[Lead, Lead, datetime], None]
_MERGE_HANDLERS: dict[str, MergeHandler] = {}


def lead_merge_handler(model_label: str) -> Callable[[MergeHandler], MergeHandler]:
    """Register a function that moves `model_label`'s rows from the merged lead to the survivor."""

    def register(func: MergeHandler) -> MergeHandler:
        _MERGE_HANDLERS[model_label] = func
        return func

    return register


@lead_merge_handler("leads.PoolMembership")
def _merge_pool_memberships(survivor: Lead, merged: Lead, now: datetime) -> None:
    """Memberships move over; where both leads are in a pool, the merged lead's stay ends now (one open
    row per lead and pool)."""
    survivor_pools = PoolMembership.objects.filter(lead=survivor, left_at__isnull=True).values("pool_id")
    PoolMembership.objects.filter(lead=merged, left_at__isnull=True, pool_id__in=survivor_pools).update(
        left_at=now
    )
    PoolMembership.objects.filter(lead=merged).update(lead=survivor)


# --- Reading identities.


def lead_resolve(*, lead_id: int) -> Lead | None:
    """The lead with this id, or the survivor it was merged into."""
    lead = Lead.objects.filter(pk=lead_id).first()
    if lead is not None:
        return lead
    merge = LeadMerge.objects.filter(merged_id=lead_id).select_related("survivor").first()
    return merge.survivor if merge else None


def _identity_query(identities: dict[str, str]) -> Q:
    query = Q()
    for name, value in identities.items():
        query |= Q(**{name: value})
    return query


def _identities_of(data: dict[str, Any]) -> dict[str, str]:
    return {name: data[name] for name in IDENTITY_FIELDS if data.get(name)}


def _apply(lead: Lead, data: dict[str, Any]) -> list[str]:
    """Write payload values onto the lead; return the names of the fields that changed."""
    changed = []
    for name, value in data.items():
        if name not in WRITABLE_FIELDS:
            continue
        if name == "properties":
            merged = {**(lead.properties or {}), **(value or {})}
            if merged != lead.properties:
                lead.properties = merged
                changed.append(name)
            continue
        if name in IDENTITY_FIELDS and not value:
            continue  # a blank identity in a payload never erases a known one
        attr = "owner_id" if name == "owner" else name
        value = value.pk if name == "owner" and value is not None else value
        if getattr(lead, attr) != value:
            setattr(lead, attr, value)
            changed.append(attr)
    return changed


# --- Single upsert.


def lead_create(*, data: dict[str, Any], tags: Sequence[str] = (), now: datetime | None = None) -> Lead:
    """Create a lead; an identity already in use raises IdentityConflict."""
    now = now or timezone_now()
    lead = Lead()
    _apply(lead, data)
    try:
        with transaction.atomic():
            lead.save()
            if tags:
                lead_tags_change(lead=lead, add=tags, source="api", now=now)
            leads_mark_dirty(lead_ids=[lead.pk], now=now)
    except IntegrityError as exc:
        raise IdentityConflict("an identity of this lead belongs to another lead") from exc
    return lead


def lead_upsert(
    *,
    data: dict[str, Any],
    tags: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
    why: str = "upsert",
    now: datetime | None = None,
) -> UpsertResult:
    """Create or update the lead that the payload's identities point to.

    All leads matched by any identity become one: the others are merged into the oldest.
    A concurrent writer that inserts the same identity first makes this retry as an update.
    """
    now = now or timezone_now()
    identities = _identities_of(data)
    for attempt in range(3):
        try:
            with transaction.atomic():
                return _lead_upsert_once(
                    data=data, identities=identities, tags=tags, defaults=defaults or {}, why=why, now=now
                )
        except IntegrityError:
            if attempt == 2:
                raise
            logger.info("upsert raced with another writer on %s; retrying", identities)
    raise AssertionError("unreachable")


def _lead_upsert_once(
    *,
    data: dict[str, Any],
    identities: dict[str, str],
    tags: Sequence[str],
    defaults: dict[str, Any],
    why: str,
    now: datetime,
) -> UpsertResult:
    matches = (
        list(Lead.objects.select_for_update().filter(_identity_query(identities)).order_by("id"))
        if identities
        else []
    )
    merged_ids: list[int] = []
    if not matches:
        lead = Lead()
        created = True
    else:
        lead = matches[0]
        created = False
        for other in matches[1:]:
            merged_ids.append(other.pk)
            lead_merge(
                survivor=lead,
                merged=other,
                why=f"{why}: one payload matched #{lead.pk} and #{other.pk} ({', '.join(identities)})",
                now=now,
            )
    changed = _apply(lead, {**defaults, **data} if created else data)
    if created or changed:
        lead.save()
    if tags:
        lead_tags_change(lead=lead, add=tags, source=data.get("source") or "api", now=now)
    elif created or changed:
        leads_mark_dirty(lead_ids=[lead.pk], now=now)
    return UpsertResult(lead=lead, created=created, merged_ids=merged_ids)


# --- Bulk upsert: bounded queries per batch, not a transaction per item.


def lead_bulk_upsert(
    *,
    items: Sequence[dict[str, Any] | None],
    tags: Sequence[Sequence[str]] | None = None,
    errors: Sequence[dict[str, Any] | None] | None = None,
    defaults: Sequence[dict[str, Any]] | None = None,
    why: str = "bulk upsert",
    now: datetime | None = None,
) -> list[BulkItemResult]:
    """Upsert many leads. `items[i]` is a validated payload, or None with `errors[i]` saying why;
    `defaults[i]` are fields written only if the item creates its lead (e.g. the source of an event).

    The good items land whatever the bad ones say. One query finds every lead that any identity of
    the batch names; new leads are inserted in one statement and changed ones updated in one.
    Items that would join two existing leads (a merge) go through `lead_upsert` one by one.
    """
    now = now or timezone_now()
    tags = tags or [()] * len(items)
    defaults = defaults or [{}] * len(items)
    results: list[BulkItemResult | None] = [None] * len(items)
    for index, item in enumerate(items):
        if item is None:
            results[index] = BulkItemResult(index=index, status="error", errors=(errors or {})[index] or {})

    valid = [(i, item) for i, item in enumerate(items) if item is not None]
    try:
        with transaction.atomic():
            slow = _bulk_upsert_fast(valid=valid, tags=tags, defaults=defaults, results=results, now=now)
    except IntegrityError:
        # Another writer inserted one of our identities meanwhile: redo this batch item by item.
        logger.info("bulk upsert raced with another writer; falling back to one item at a time")
        slow = [i for i, _ in valid]
        for i in slow:
            results[i] = None
    for index in slow:
        item = items[index]
        assert item is not None
        try:
            outcome = lead_upsert(data=item, tags=tags[index], defaults=defaults[index], why=why, now=now)
        except IdentityConflict as exc:
            results[index] = BulkItemResult(
                index=index, status="error", errors={"non_field_errors": [str(exc)]}
            )
        else:
            results[index] = BulkItemResult(
                index=index,
                status="created" if outcome.created else "updated",
                id=outcome.lead.pk,
                merged_ids=outcome.merged_ids,
            )
    return [r for r in results if r is not None]


def _bulk_upsert_fast(
    *,
    valid: list[tuple[int, dict[str, Any]]],
    tags: Sequence[Sequence[str]],
    defaults: Sequence[dict[str, Any]],
    results: list[BulkItemResult | None],
    now: datetime,
) -> list[int]:
    """Resolve and write the batch set-based; return the indexes that need the one-by-one path."""
    values: dict[str, set[str]] = {name: set() for name in IDENTITY_FIELDS}
    for _, item in valid:
        for name, value in _identities_of(item).items():
            values[name].add(value)
    query = Q()
    for name, wanted in values.items():
        if wanted:
            query |= Q(**{f"{name}__in": wanted})
    # Lead rows are locked in id order on every ingest path (here, the deferred foreign-key checks of
    # an event insert, the lead-times UPDATE): concurrent batches queue instead of deadlocking.
    existing = list(Lead.objects.select_for_update().filter(query).order_by("pk")) if query else []

    by_identity: dict[tuple[str, str], Lead] = {}
    for lead in existing:
        for name, value in lead.identities().items():
            by_identity[(name, value)] = lead

    new_leads: list[Lead] = []
    new_ids: set[int] = set()  # id() of Lead objects created in this batch
    touched: dict[int, Lead] = {}
    changed_fields: set[str] = set()
    item_lead: dict[int, Lead] = {}
    created_index: set[int] = set()
    slow: list[int] = []

    for index, item in valid:
        identities = _identities_of(item)
        matched = {id(by_identity[key]): by_identity[key] for key in identities.items() if key in by_identity}
        if len(matched) > 1:
            slow.append(index)
            continue
        if matched:
            lead = next(iter(matched.values()))
            # An in-batch lead must not take an identity some other lead holds.
            before = lead.identities()
            changed = _apply(lead, item)
            if any(by_identity.get((n, v), lead) is not lead for n, v in lead.identities().items()):
                for name in IDENTITY_FIELDS:
                    setattr(lead, name, before.get(name))
                slow.append(index)
                continue
            if id(lead) not in new_ids and changed:
                touched[lead.pk] = lead
                changed_fields.update(changed)
        else:
            lead = Lead(created_at=now, updated_at=now)
            _apply(lead, {**defaults[index], **item})
            new_leads.append(lead)
            new_ids.add(id(lead))
            created_index.add(index)
        for key in lead.identities().items():
            by_identity[key] = lead
        item_lead[index] = lead

    # Writers racing on the same people insert them in one order, so they queue instead of deadlocking.
    new_leads.sort(key=lambda lead: tuple(getattr(lead, name) or "" for name in IDENTITY_FIELDS))
    rows_insert(new_leads)
    if touched and changed_fields:
        for lead in touched.values():
            lead.updated_at = now
        rows_update(list(touched.values()), sorted(changed_fields | {"updated_at"}))

    tag_names = {name for index in item_lead for name in tags[index]}
    if tag_names:
        tag_by_name = tags_get_or_create(names=tag_names)
        pairs = [
            (item_lead[index].pk, tag_by_name[tag_name_normalize(name)].pk)
            for index in item_lead
            for name in tags[index]
        ]
        lead_tags_stamp(pairs=pairs, source="import", now=now)

    # Only leads whose data changed need the pools' attention.
    dirty = [lead.pk for lead in new_leads] + list(touched)
    dirty += [item_lead[index].pk for index in item_lead if tags[index]]
    leads_mark_dirty(lead_ids=dirty, now=now)
    for index, lead in item_lead.items():
        results[index] = BulkItemResult(
            index=index, status="created" if index in created_index else "updated", id=lead.pk
        )
    return slow


# --- Merge.


def lead_merge(
    *,
    survivor: Lead,
    merged: Lead,
    why: str,
    by: AbstractBaseUser | None = None,
    now: datetime | None = None,
) -> Lead:
    """Fold `merged` into `survivor`: every relation moves over, tag counts add up, and the merge is
    logged so that `merged`'s id keeps resolving to the survivor. The caller picks the survivor
    (the older lead, for automatic merges)."""
    now = now or timezone_now()
    if survivor.pk == merged.pk:
        raise ValueError("a lead cannot be merged into itself")
    with transaction.atomic():
        locked = {
            lead.pk: lead
            for lead in Lead.objects.select_for_update()
            .filter(pk__in=[survivor.pk, merged.pk])
            .order_by("pk")
        }
        if merged.pk not in locked or survivor.pk not in locked:
            raise Lead.DoesNotExist("one of the leads to merge no longer exists")
        survivor.refresh_from_db()
        merged.refresh_from_db()
        identities = merged.identities()
        snapshot = {
            f.attname: _jsonable(getattr(merged, f.attname))
            for f in Lead._meta.concrete_fields
            if f.name != "id"
        }

        # Identities are unique: free them on the merged lead before the survivor takes them.
        Lead.objects.filter(pk=merged.pk).update(
            **{name: None for name in (*IDENTITY_FIELDS, "wechat_openid")}
        )
        _merge_fields(survivor, merged)
        survivor.updated_at = now
        survivor.save()

        _merge_tags(survivor, merged)
        for relation in Lead._meta.related_objects:
            model = relation.related_model
            if model in (LeadTag, LeadMerge) or not relation.one_to_many:
                continue
            handler = _MERGE_HANDLERS.get(model._meta.label)
            if handler is not None:
                handler(survivor, merged, now)
            else:
                model._base_manager.filter(**{relation.field.name: merged}).update(
                    **{relation.field.name: survivor}
                )
        LeadMerge.objects.filter(survivor=merged).update(survivor=survivor)
        LeadMerge.objects.create(
            survivor=survivor,
            merged_id=merged.pk,
            identities=identities,
            snapshot=snapshot,
            why=why,
            by=by,
            at=now,
        )
        merged.delete()
        leads_mark_dirty(lead_ids=[survivor.pk], now=now, events=True)  # the merged lead's events came
    return survivor


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _merge_fields(survivor: Lead, merged: Lead) -> None:
    for name in IDENTITY_FIELDS:
        if not getattr(survivor, name) and getattr(merged, name):
            setattr(survivor, name, getattr(merged, name))
    if not survivor.wechat_openid:
        survivor.wechat_openid = merged.wechat_openid
    names = ("name", "company", "title", "industry", "company_size", "source", "consent_version")
    for name in (*names, "wecom_follow_user"):
        if not getattr(survivor, name):
            setattr(survivor, name, getattr(merged, name))
    for name in ("bant_budget", "bant_authority", "bant_need", "bant_timeline", "consent", "do_not_contact"):
        setattr(survivor, name, getattr(survivor, name) or getattr(merged, name))
    if survivor.owner_id is None:
        survivor.owner_id = merged.owner_id
    if STAGE_RANK.get(merged.stage, 0) > STAGE_RANK.get(survivor.stage, 0):
        survivor.stage = merged.stage
    survivor.score = max(survivor.score, merged.score)
    survivor.properties = {**(merged.properties or {}), **(survivor.properties or {})}
    for name in ("consent_at", "last_inbound_at", "last_event_at", "wechat_oa_interaction_at"):
        candidates = [v for v in (getattr(survivor, name), getattr(merged, name)) if v is not None]
        setattr(survivor, name, max(candidates) if candidates else None)
    survivor.created_at = min(survivor.created_at, merged.created_at)


def _merge_tags(survivor: Lead, merged: Lead) -> None:
    mine = {lt.tag_id: lt for lt in LeadTag.objects.filter(lead=survivor)}
    for theirs in LeadTag.objects.filter(lead=merged):
        own = mine.get(theirs.tag_id)
        if own is None:
            LeadTag.objects.filter(pk=theirs.pk).update(lead=survivor)
            continue
        own.count += theirs.count
        own.first_at = min(own.first_at, theirs.first_at)
        own.last_at = max(own.last_at, theirs.last_at)
        own.save(update_fields=["count", "first_at", "last_at"])
        theirs.delete()


# --- Stage write-back, tags, profile edits.


def lead_stage_set(
    *,
    lead: Lead,
    stage: str,
    reason: str = "",
    amount: Decimal | None = None,
    by: AbstractBaseUser | None = None,
    actor: str = "",
    now: datetime | None = None,
) -> StageChange | None:
    """Move the lead to `stage` and record the change. Repeating the same write-back records nothing."""
    now = now or timezone_now()
    with transaction.atomic():
        lead = Lead.objects.select_for_update().get(pk=lead.pk)
        last = lead.stage_changes.order_by("-at", "-id").first()
        if (
            lead.stage == stage
            and last is not None
            and last.to_stage == stage
            and last.reason == reason
            and last.amount == amount
        ):
            return None
        change = StageChange.objects.create(
            lead=lead,
            from_stage=lead.stage,
            to_stage=stage,
            reason=reason,
            amount=amount,
            by=by,
            actor=actor,
            at=now,
        )
        Lead.objects.filter(pk=lead.pk).update(stage=stage, updated_at=now)
        leads_mark_dirty(lead_ids=[lead.pk], now=now)
        data = {"from": change.from_stage, "to": stage, "reason": reason}
        if amount is not None:
            data["amount"] = str(amount)
        outbox_put(type="lead.stage_changed", lead_ids=[lead.pk], occurred_at=now, data=data)
        if stage == Stage.RECYCLED:
            _recycle_tag(lead=lead, reason=reason, now=now)
        if stage in (Stage.MQL, Stage.SQL) and change.from_stage != stage:
            outbox_put(type=f"lead.{stage}", lead_ids=[lead.pk], occurred_at=now, data={"reason": reason})
    return change


def _recycle_tag(*, lead: Lead, reason: str, now: datetime) -> None:
    """A returned lead gets its reason's tag, which the value pools' rules read. The reason matches by
    code or label, or by a label it contains ("暂无预算，下季度再联系" is 暂无预算)."""
    text = reason.strip()
    reasons = list(RecycleReason.objects.filter(active=True))
    match = next((r for r in reasons if text in (r.code, r.label)), None)
    match = match or next((r for r in reasons if r.label and r.label in text), None)
    if match is not None:
        lead_tags_change(lead=lead, add=[match.tag_name], source="recycle", now=now)


def lead_scores_copy(*, source_table: str, now: datetime) -> int:
    """Copy `score` and `temperature` from a (lead_id, score, temperature) table of the scoring app onto
    the leads whose values differ, in one statement; returns the leads changed.

    A new temperature moves `updated_at` (a sync by `updated_since` sees a lead turn hot); a score that
    only drifts (decay moves most scores every night) does not, so the nightly rescoring neither marks
    every lead updated nor rewrites every index of the lead table: score is in no index, and the update
    stays on its page (HOT)."""
    table = Lead._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET score = s.score, temperature = s.temperature, "
            f"updated_at = CASE WHEN {table}.temperature <> s.temperature THEN %s "
            f"ELSE {table}.updated_at END "
            f"FROM {source_table} s WHERE {table}.id = s.lead_id "
            f"AND ({table}.score <> s.score OR {table}.temperature <> s.temperature)",
            [connection.ops.adapt_datetimefield_value(now)],
        )
        return max(cursor.rowcount, 0)


def lead_update(*, lead: Lead, data: dict[str, Any], now: datetime | None = None) -> Lead:
    """PATCH: write the given fields; an identity that belongs to another lead raises IdentityConflict."""
    now = now or timezone_now()
    stage = data.pop("stage", None)
    changed = _apply(lead, data)
    try:
        with transaction.atomic():
            if changed:
                lead.save()
                leads_mark_dirty(lead_ids=[lead.pk], now=now)
            if stage and stage != lead.stage:
                lead_stage_set(lead=lead, stage=stage, reason="edited", actor="api", now=now)
                lead.refresh_from_db()
    except IntegrityError as exc:
        raise IdentityConflict("an identity of this lead belongs to another lead") from exc
    return lead


def lead_tags_change(
    *, lead: Lead, add: Iterable[str] = (), remove: Iterable[str] = (), source: str = "api", now: datetime
) -> None:
    """Add tags (stamping: a tag already there counts one more) and remove tags from one lead."""
    add = list(add)
    if add:
        tags = tags_get_or_create(names=add)
        lead_tags_stamp(pairs=[(lead.pk, t.pk) for t in tags.values()], source=source, now=now)
    remove = [n for n in remove if n.strip()]
    if remove:
        LeadTag.objects.filter(lead=lead, tag__name__in=[tag_name_normalize(n) for n in remove]).delete()
    Lead.objects.filter(pk=lead.pk).update(updated_at=now)
    leads_mark_dirty(lead_ids=[lead.pk], now=now)


# --- Events.


@dataclass
class EventInput:
    type: str
    occurred_at: datetime
    properties: dict[str, Any]
    event_id: str | None
    lead_id: int | None
    identity: dict[str, Any] | None
    source: str = ""


def event_record_bulk(
    *, items: Sequence[EventInput | None], now: datetime | None = None
) -> list[dict[str, Any]]:
    """Record events; `None` items are already-reported errors. Returns per-item status, in order.

    A repeated `event_id` (in this batch or before) is `duplicate` and stored once. An identity that
    matches no lead creates the lead. Everything is done in a bounded number of statements.
    """
    now = now or timezone_now()
    statuses: list[dict[str, Any] | None] = [None] * len(items)

    # Resolve leads given by identity through the bulk upsert (which creates unknown ones).
    by_identity = [
        (i, item) for i, item in enumerate(items) if item is not None and item.identity is not None
    ]
    if by_identity:
        # The event's source names where a lead came from only when the event creates it.
        upserts = lead_bulk_upsert(
            items=[item.identity for _, item in by_identity],
            defaults=[{"source": item.source} for _, item in by_identity],
            why="event",
            now=now,
        )
        for (index, item), result in zip(by_identity, upserts, strict=True):
            if result.status == "error":
                statuses[index] = {"index": index, "status": "error", "errors": {"lead": result.errors}}
            else:
                item.lead_id = result.id

    # Leads given by id, resolving merged ids to their survivors.
    wanted_ids = {item.lead_id for item in items if item is not None and item.lead_id is not None}
    live = set(Lead.objects.filter(pk__in=wanted_ids).values_list("pk", flat=True))
    survivors = dict(
        LeadMerge.objects.filter(merged_id__in=wanted_ids - live).values_list("merged_id", "survivor_id")
    )

    event_ids = {item.event_id for item in items if item is not None and item.event_id}
    # On PostgreSQL the insert skips stored event_ids itself (ON CONFLICT DO NOTHING), on the unique
    # index whatever the statistics say; this lookup planned a full scan of a fast-growing table.
    seen = (
        set(Event.objects.filter(event_id__in=event_ids).values_list("event_id", flat=True))
        if event_ids and connection.vendor != "postgresql"
        else set()
    )
    rows: list[tuple[int, Event]] = []
    for index, item in enumerate(items):
        if item is None or statuses[index] is not None:
            continue
        lead_id = item.lead_id if item.lead_id in live else survivors.get(item.lead_id)
        if lead_id is None:
            statuses[index] = {"index": index, "status": "error", "errors": {"lead": ["no such lead"]}}
            continue
        if item.event_id and item.event_id in seen:
            statuses[index] = {
                "index": index,
                "status": "duplicate",
                "event_id": item.event_id,
                "lead": lead_id,
            }
            continue
        if item.event_id:
            seen.add(item.event_id)
        event = Event(
            lead_id=lead_id,
            type=item.type,
            occurred_at=item.occurred_at,
            properties=item.properties,
            event_id=item.event_id or None,
            source=item.source,
        )
        rows.append((index, event))
        statuses[index] = {"index": index, "status": "created", "event_id": item.event_id, "lead": lead_id}

    stored = _events_insert(rows)
    for index, _ in rows:
        if index not in stored:
            statuses[index]["status"] = "duplicate"  # type: ignore[index]
    _leads_note_events([event for index, event in rows if index in stored])
    return [s for s in statuses if s is not None]


def _events_insert(rows: list[tuple[int, Event]]) -> set[int]:
    """Insert the events; return the indexes stored. A concurrent writer of the same event_id wins."""
    if not rows:
        return set()
    skip = "event_id" if connection.vendor == "postgresql" else None
    # In (lead, event_id) order: the foreign-key checks at commit then lock the leads in id order (see
    # _bulk_upsert_fast), and batches replaying the same event_ids in another order wait on the unique
    # index instead of deadlocking on it.
    events = sorted((event for _, event in rows), key=lambda event: (event.lead_id, event.event_id or ""))
    try:
        with transaction.atomic():
            inserted = {id(event) for event in rows_insert(events, skip_conflicts_on=skip)}
        return {index for index, event in rows if id(event) in inserted}
    except IntegrityError:
        ids = [event.event_id for _, event in rows if event.event_id]
        taken = set(Event.objects.filter(event_id__in=ids).values_list("event_id", flat=True))
        remaining = [
            (index, event) for index, event in rows if not event.event_id or event.event_id not in taken
        ]
        for _, event in remaining:
            event.pk = None
        return _events_insert(remaining) if len(remaining) < len(rows) else set()


def _leads_note_events(events: list[Event]) -> None:
    """Move each lead's last-event and last-inbound times forward; an unsubscribe sets do-not-contact
    (one from a single channel, `properties.channel`, opts out of that channel only)."""
    if not events:
        return
    last: dict[int, datetime] = {}
    first: dict[int, datetime] = {}
    inbound: dict[int, datetime] = {}
    optout: set[int] = set()
    for event in events:
        lead_id = event.lead_id
        last[lead_id] = max(last.get(lead_id, event.occurred_at), event.occurred_at)
        first[lead_id] = min(first.get(lead_id, event.occurred_at), event.occurred_at)
        if event.type in INBOUND_EVENT_TYPES:
            inbound[lead_id] = max(inbound.get(lead_id, event.occurred_at), event.occurred_at)
        if event.type == "unsubscribed" and not (event.properties or {}).get("channel"):
            optout.add(lead_id)
    _lead_times_forward(last_event=last, last_inbound=inbound)
    leads_mark_dirty(lead_ids=last.keys(), events=True, since=first)
    if optout:
        Lead.objects.filter(pk__in=optout, do_not_contact=False).update(
            do_not_contact=True, updated_at=timezone_now()
        )


def _lead_times_forward(*, last_event: dict[int, datetime], last_inbound: dict[int, datetime]) -> None:
    """Move `last_event_at` and `last_inbound_at` forward (never back) for many leads in one statement:
    one new version of each lead row, not one per column."""
    if not last_event and not last_inbound:
        return
    ids = sorted(last_event.keys() | last_inbound.keys())
    if connection.vendor != "postgresql":
        # SQLite (the demo) takes few parameters per statement: CASE per lead, in small batches.
        for start in range(0, len(ids), 100):
            batch = ids[start : start + 100]
            changes = {}
            for column, values in (("last_event_at", last_event), ("last_inbound_at", last_inbound)):
                whens = [
                    When(
                        pk=lead_id,
                        then=Greatest(Coalesce(F(column), Value(values[lead_id])), Value(values[lead_id])),
                    )
                    for lead_id in batch
                    if lead_id in values
                ]
                if whens:
                    changes[column] = Case(*whens, default=F(column), output_field=DateTimeField())
            Lead.objects.filter(pk__in=batch).update(**changes)
        return
    # Arrays, not a VALUES list: the planner joins VALUES by scanning the whole lead table.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Lead._meta.db_table} AS l SET last_event_at = GREATEST(l.last_event_at, v.event_at), "
            "last_inbound_at = GREATEST(l.last_inbound_at, v.inbound_at) "
            "FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS v(id, event_at, inbound_at) "
            "WHERE l.id = v.id AND (l.last_event_at IS DISTINCT FROM GREATEST(l.last_event_at, v.event_at) "
            "OR l.last_inbound_at IS DISTINCT FROM GREATEST(l.last_inbound_at, v.inbound_at))",
            [ids, [last_event.get(i) for i in ids], [last_inbound.get(i) for i in ids]],
        )
