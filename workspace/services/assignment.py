"""Assignment: claim (two SDRs at once: one wins), round-robin, by the manager, release; tasks follow the
lead to its new SDR."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext as _

from leads.models import Lead
from nurture.outbox import outbox_put
from workspace.models import Assignment, Notification, SdrProfile, WorkspaceSettings
from workspace.people import person_name
from workspace.services.common import (
    ClaimLost,
    User,
    WorkspaceError,
    _end_open,
    _leads_dirty,
    _local,
    _open,
    hot_queue_leads,
    lead_label,
    notifications_add,
    sdrs_for_round_robin,
    sdrs_penalised,
    sla_first_touch_due,
    workspace_settings_get,
)


def _assign_rows(
    *,
    pairs: Sequence[tuple[int, int]],
    via: str,
    by: User | None,
    now: datetime,
    settings_row: WorkspaceSettings,
) -> list[Assignment]:
    """Open an assignment per (lead, sdr) whose lead row is already the SDR's (owner written, row locked),
    notify the SDRs, stamp their last assignment and tell the CRM (`lead.assigned`)."""
    if not pairs:
        return []
    due = sla_first_touch_due(assigned_at=now, settings_row=settings_row)
    rows = Assignment.objects.bulk_create(
        [
            Assignment(
                lead_id=lead_id,
                sdr_id=sdr_id,
                via=via,
                by=by if getattr(by, "pk", None) else None,
                assigned_at=now,
                first_touch_due=due,
            )
            for lead_id, sdr_id in pairs
        ]
    )
    for sdr_id in {sdr_id for _lead, sdr_id in pairs}:
        SdrProfile.objects.update_or_create(user_id=sdr_id, defaults={"last_assigned_at": now})
    leads = Lead.objects.in_bulk([lead_id for lead_id, _sdr in pairs])
    notifications_add(
        items=[
            (
                a.sdr_id,
                Notification.Kind.ASSIGNED,
                a,
                _("New hot lead for you: %(lead)s — first follow-up by %(due)s")
                % {"lead": lead_label(leads[a.lead_id]), "due": _local(due, settings_row)},
            )
            for a in rows
        ],
        now=now,
        settings_row=settings_row,
    )
    usernames = dict(
        get_user_model().objects.filter(pk__in={s for _l, s in pairs}).values_list("pk", "username")
    )
    outbox_put(
        type="lead.assigned",
        lead_ids=[lead_id for lead_id, _sdr in pairs],
        occurred_at=now,
        data_by_lead={
            lead_id: {"owner": usernames.get(sdr_id), "via": via, "first_touch_due": due.isoformat()}
            for lead_id, sdr_id in pairs
        },
    )
    return rows


def lead_claim(*, lead: Lead, sdr: User, now: datetime | None = None) -> Assignment:
    """The SDR takes an unassigned hot lead. Two SDRs at once: the first UPDATE wins, the other gets
    ClaimLost naming the winner. An SDR in a penalty period cannot claim."""
    now = now or timezone_now()
    s = workspace_settings_get()
    if sdr.pk in sdrs_penalised(now=now, settings_row=s):
        raise WorkspaceError(
            "sdr", _("You are in a penalty period after repeated SLA breaches: no new leads.")
        )
    with transaction.atomic():
        taken = hot_queue_leads().filter(pk=lead.pk, owner__isnull=True).update(owner=sdr, updated_at=now)
        if not taken:
            owner = get_user_model().objects.filter(owned_leads=lead.pk).first()
            if owner is None:
                raise WorkspaceError("lead", _("This lead is no longer in the hot queue."))
            who = person_name(owner)
            raise ClaimLost("lead", _("Already claimed by %(who)s.") % {"who": who})
        _end_open(lead_ids=[lead.pk], reason=Assignment.End.RELEASED, now=now)
        (assignment,) = _assign_rows(
            pairs=[(lead.pk, sdr.pk)], via=Assignment.Via.CLAIM, by=sdr, now=now, settings_row=s
        )
        _tasks_follow({lead.pk: sdr.pk})
    _leads_dirty([lead.pk], now)
    return assignment


def leads_assign(
    *,
    lead_ids: Iterable[int],
    via: str,
    now: datetime,
    sdr: User | None = None,
    by: User | None = None,
    only_unowned: bool = True,
    exclude_sdrs: Iterable[int] = (),
) -> dict[int, int]:
    """Give leads to `sdr`, or round-robin among the available SDRs out of a penalty period. Leads locked
    by another writer are skipped (the next tick takes them). Returns lead id → SDR id."""
    ids = sorted({int(i) for i in lead_ids})
    if not ids:
        return {}
    s = workspace_settings_get()
    sdrs = [sdr] if sdr is not None else sdrs_for_round_robin(now=now, exclude=exclude_sdrs)
    if not sdrs:
        return {}
    with transaction.atomic():
        rows = Lead.objects.select_for_update(skip_locked=True).filter(pk__in=ids)
        if only_unowned:
            rows = rows.filter(owner__isnull=True)
        locked = list(rows.order_by("pk").values_list("pk", flat=True))
        if not locked:
            return {}
        pairs = [(lead_id, sdrs[i % len(sdrs)].pk) for i, lead_id in enumerate(locked)]
        by_sdr: dict[int, list[int]] = {}
        for lead_id, sdr_id in pairs:
            by_sdr.setdefault(sdr_id, []).append(lead_id)
        for sdr_id, sdr_leads in by_sdr.items():  # one statement per SDR, not per lead
            Lead.objects.filter(pk__in=sdr_leads).update(owner_id=sdr_id, updated_at=now)
        _end_open(lead_ids=locked, reason=Assignment.End.REASSIGNED, now=now)
        _assign_rows(pairs=pairs, via=via, by=by, now=now, settings_row=s)
        _tasks_follow(dict(pairs))
    _leads_dirty(locked, now)
    return dict(pairs)


def _tasks_follow(lead_owners: dict[int, int]) -> None:
    """The open staff and call tasks of the leads go to their new owner."""
    from channels.calls import call_tasks_reassign
    from sequences.services import tasks_reassign

    tasks_reassign(lead_owners=lead_owners)
    call_tasks_reassign(lead_owners=lead_owners)


def leads_reassign(*, lead_ids: Iterable[int], sdr: User, by: User, now: datetime | None = None) -> int:
    """A manager moves leads to another SDR (the previous SDR is told). Penalties do not stop a manager."""
    now = now or timezone_now()
    ids = list(lead_ids)
    previous = dict(_open(ids).exclude(sdr=sdr).values_list("lead_id", "sdr_id"))
    done = leads_assign(lead_ids=ids, via=Assignment.Via.MANAGER, now=now, sdr=sdr, by=by, only_unowned=False)
    _notify_taken_away(previous={k: v for k, v in previous.items() if k in done}, now=now)
    return len(done)


def lead_release(*, lead: Lead, sdr: User, now: datetime | None = None) -> bool:
    """The SDR gives a lead back to the queue (another SDR can claim it)."""
    now = now or timezone_now()
    with transaction.atomic():
        released = Lead.objects.filter(pk=lead.pk, owner=sdr).update(owner=None, updated_at=now)
        if released:
            _end_open(lead_ids=[lead.pk], reason=Assignment.End.RELEASED, now=now)
    if released:
        _leads_dirty([lead.pk], now)
    return bool(released)


def _notify_taken_away(*, previous: dict[int, int], now: datetime, after_breach: bool = False) -> None:
    if not previous:
        return
    latest = {
        a.lead_id: a
        for a in Assignment.objects.filter(lead_id__in=list(previous), sdr_id__in=set(previous.values()))
        .order_by("assigned_at")
        .select_related("lead")
    }
    notifications_add(
        items=[
            (
                sdr_id,
                Notification.Kind.REASSIGNED,
                latest[lead_id],
                (
                    _("%(lead)s was taken from you after the SLA breach")
                    if after_breach
                    else _("%(lead)s was given to another SDR")
                )
                % {"lead": lead_label(latest[lead_id].lead)},
            )
            for lead_id, sdr_id in previous.items()
            if lead_id in latest
        ],
        now=now,
    )
