"""The SDR workspace's pages (server-rendered, htmx for the polling and the partial updates).

SDRs and managers only (groups `sdr`, `sdr_manager`); an SDR sees the unassigned hot queue and its own
leads, and gets 403 for another SDR's lead on every URL, page or action."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.timezone import is_naive, make_aware
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from leads.models import Lead, RecycleReason
from workspace import selectors, services
from workspace.models import Assignment, Notification
from workspace.people import person_name

View = Callable[..., HttpResponse]


def workspace_member(view: View) -> View:
    """Logged in and an SDR or a manager; others get 403 (marketers work in the admin)."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not (selectors.user_is_sdr(user) or selectors.user_is_manager(user)):
            raise PermissionDenied(_("The workspace is for SDRs and their managers."))
        return view(request, *args, **kwargs)

    return wrapped


def manager_only(view: View) -> View:
    @workspace_member
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not selectors.user_is_manager(request.user):
            raise PermissionDenied(_("Only managers see the team."))
        return view(request, *args, **kwargs)

    return wrapped


def _lead(request: HttpRequest, pk: int, *, act: bool) -> Lead:
    lead = get_object_or_404(Lead.objects.select_related("owner"), pk=pk)
    allowed = (
        selectors.lead_actionable(user=request.user, lead=lead)
        if act
        else selectors.lead_visible(user=request.user, lead=lead)
    )
    if not allowed:
        raise PermissionDenied(_("This lead belongs to another SDR."))
    return lead


def _common(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    return {
        "poll_seconds": settings.NURTURE_QUEUE_POLL_SECONDS,
        "is_manager": selectors.user_is_manager(user),
        "unread": Notification.objects.filter(user=user, read_at__isnull=True).count(),
    }


def _back(request: HttpRequest, lead: Lead) -> HttpResponse:
    return redirect("workspace:lead", pk=lead.pk)


def _when(value: str) -> datetime | None:
    """A datetime-local input (the user's local time) as an aware datetime."""
    if not value:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        return None
    return make_aware(parsed) if is_naive(parsed) else parsed


# --- Log-in.


class LoginView(auth_views.LoginView):
    template_name = "workspace/login.html"
    redirect_authenticated_user = True


# --- The queue.


@workspace_member
def queue(request: HttpRequest) -> HttpResponse:
    filters = selectors.QueueFilters.of(request.GET)
    now = timezone_now()
    page = selectors.queue_page(user=request.user, filters=filters, page=_page(request), now=now)
    context = {
        **_common(request),
        "nav": "queue",
        "filters": filters,
        "page": page,
        "facets": selectors.queue_facets(),
        "poll_since": int(now.timestamp()),
        "now": now,
        "team": list(services.sdrs_team().order_by("username"))
        if selectors.user_is_manager(request.user)
        else [],
    }
    if request.htmx and request.htmx.target == "queue-rows":
        return render(request, "workspace/_queue_rows.html", context)
    return render(request, "workspace/queue.html", context)


@workspace_member
def queue_poll(request: HttpRequest) -> HttpResponse:
    """Polled by the queue page: the rows redrawn (a new hot lead appears without a reload), with a banner
    while the page shows leads that turned hot since it was first drawn."""
    now = timezone_now()
    try:
        since = int(request.GET.get("since", ""))
    except ValueError:
        since = int(now.timestamp())
    filters = selectors.QueueFilters.of(request.GET)
    page = selectors.queue_page(user=request.user, filters=filters, page=_page(request), now=now)
    arrived = any(row.hot_since is not None and row.hot_since.timestamp() > since for row in page.rows)
    return render(
        request,
        "workspace/_queue_poll.html",
        {
            **_common(request),
            "filters": filters,
            "page": page,
            "new_arrivals": arrived,
            # The banner stays until a reload: the poll keeps comparing with when the page was drawn.
            "poll_since": since,
            "now": now,
        },
    )


def _page(request: HttpRequest) -> int:
    try:
        return int(request.GET.get("page", "1"))
    except ValueError:
        return 1


@workspace_member
@require_POST
def claim(request: HttpRequest, pk: int) -> HttpResponse:
    # Not _lead(): a lead another SDR took a moment ago gets "already claimed by …", not a bare 403.
    lead = get_object_or_404(Lead, pk=pk)
    if not selectors.user_is_sdr(request.user):
        raise PermissionDenied(_("Only SDRs claim leads; managers assign them."))
    try:
        services.lead_claim(lead=lead, sdr=request.user)
    except services.WorkspaceError as exc:
        messages.error(request, exc.message)
        return redirect("workspace:queue")
    text = _("You claimed %(lead)s. Follow it up within the SLA.") % {"lead": services.lead_label(lead)}
    messages.success(request, text)
    return _back(request, lead)


@workspace_member
@require_POST
def release(request: HttpRequest, pk: int) -> HttpResponse:
    lead = _lead(request, pk, act=True)
    if services.lead_release(lead=lead, sdr=lead.owner or request.user):
        messages.info(request, _("%(lead)s is back in the queue.") % {"lead": services.lead_label(lead)})
    return redirect("workspace:queue")


# --- The lead page.


@workspace_member
def lead_detail(request: HttpRequest, pk: int) -> HttpResponse:
    lead = _lead(request, pk, act=False)
    now = timezone_now()
    context_manager = selectors.user_is_manager(request.user)
    context = {
        **_common(request),
        "nav": "mine" if lead.owner_id == request.user.pk else "queue",
        "lead": lead,
        "now": now,
        "can_act": selectors.lead_actionable(user=request.user, lead=lead),
        # Qualified, won or lost: nothing left to work but notes.
        "is_closed": lead.stage in services.CLOSED_STAGES,
        "outcomes": _outcomes(),
        "team": list(services.sdrs_team().order_by("username")) if context_manager else [],
        **selectors.lead_page(lead=lead, now=now),
    }
    return render(request, "workspace/lead.html", context)


def _outcomes() -> list[tuple[str, str]]:
    from channels.models import CallTask

    return list(CallTask.Outcome.choices)


def _action(func: Callable[[HttpRequest, Lead], str | None]) -> View:
    """A POST on the SDR's own lead: runs `func`, shows its message (or the error), back to the lead page."""

    @workspace_member
    @require_POST
    @wraps(func)
    def wrapped(request: HttpRequest, pk: int, **kwargs: Any) -> HttpResponse:
        lead = _lead(request, pk, act=True)
        try:
            done = func(request, lead, **kwargs)
        except services.WorkspaceError as exc:
            messages.error(request, exc.message)
            if request.htmx:
                return HttpResponseClientRedirect(reverse("workspace:lead", args=[lead.pk]))
            return _back(request, lead)
        if done:
            messages.success(request, done)
        return _back(request, lead)

    return wrapped


@_action
def call_log(request: HttpRequest, lead: Lead) -> str:
    outcome = request.POST.get("outcome", "")
    task = request.POST.get("task") or None
    services.lead_call_log(
        lead=lead,
        by=request.user,
        outcome=outcome,
        notes=request.POST.get("notes", ""),
        call_back_at=_when(request.POST.get("call_back_at", "")),
        task_id=int(task) if task and task.isdigit() else None,
    )
    return _("Call logged.")


@_action
def note_add(request: HttpRequest, lead: Lead) -> str:
    services.lead_note_add(lead=lead, by=request.user, text=request.POST.get("text", ""))
    return _("Note added.")


@_action
def bant_save(request: HttpRequest, lead: Lead) -> str:
    services.lead_bant_set(
        lead=lead, bant={k: request.POST.get(k) == "on" for k in ("budget", "authority", "need", "timeline")}
    )
    return _("BANT saved.")


@_action
def mark_sql(request: HttpRequest, lead: Lead) -> str:
    services.lead_mark_sql(
        lead=lead, by=request.user, override_reason=request.POST.get("override_reason", "")
    )
    return _("%(lead)s is an SQL: the CRM has been told.") % {"lead": services.lead_label(lead)}


@_action
def return_to_nurture(request: HttpRequest, lead: Lead) -> str:
    reason = RecycleReason.objects.filter(pk=request.POST.get("reason") or 0, active=True).first()
    if reason is None:
        raise services.WorkspaceError("reason", _("Choose why the lead goes back to nurturing."))
    result = services.lead_return_to_nurture(
        lead=lead, by=request.user, reason=reason, note=request.POST.get("note", "")
    )
    if result["enrolled"]:
        return _("Returned to nurturing (%(reason)s) and enrolled in %(sequence)s.") % {
            "reason": reason.label,
            "sequence": reason.sequence,
        }
    return _("Returned to nurturing (%(reason)s).") % {"reason": reason.label}


@_action
def close(request: HttpRequest, lead: Lead) -> str:
    kind = request.POST.get("kind", "")
    services.lead_close(lead=lead, by=request.user, kind=kind, note=request.POST.get("note", ""))
    return _("Marked unreachable.") if kind == Assignment.End.UNREACHABLE else _("Marked invalid.")


@_action
def task_action(request: HttpRequest, lead: Lead, kind: str, task_id: int, action: str) -> str:
    if action == "done" and kind == "touch":
        services.task_done_by(touch_id=task_id, lead=lead, by=request.user)
        return _("Task done.")
    if action == "snooze":
        until = _when(request.POST.get("until", ""))
        if until is None:
            raise services.WorkspaceError("until", _("Give a time to snooze until."))
        if kind == "touch":
            services.task_snooze_by(touch_id=task_id, lead=lead, until=until)
        else:
            services.call_task_snooze(task_id=task_id, lead=lead, until=until)
        return _("Snoozed.")
    raise services.WorkspaceError("action", _("Unknown action."))


# --- My leads, the team, the inbox.


@workspace_member
def my_leads(request: HttpRequest) -> HttpResponse:
    rows = (
        Assignment.objects.filter(sdr=request.user, ended_at__isnull=True)
        .select_related("lead")
        .order_by("followed_up_at", "first_touch_due")[:200]
    )
    return render(
        request,
        "workspace/mine.html",
        {**_common(request), "nav": "mine", "assignments": rows, "now": timezone_now()},
    )


@manager_only
def team(request: HttpRequest) -> HttpResponse:
    now = timezone_now()
    try:
        days = min(max(int(request.GET.get("days", "30")), 1), 365)
    except ValueError:
        days = 30
    rows = selectors.team_table(now=now, days=days)
    overdue = (
        Assignment.objects.filter(ended_at__isnull=True, followed_up_at__isnull=True, first_touch_due__lt=now)
        .select_related("lead", "sdr")
        .order_by("first_touch_due")[:100]
    )
    return render(
        request,
        "workspace/team.html",
        {
            **_common(request),
            "nav": "team",
            "rows": rows,
            "days": days,
            "overdue": overdue,
            "team": [r.sdr for r in rows],
            "now": now,
        },
    )


@manager_only
@require_POST
def reassign(request: HttpRequest) -> HttpResponse:
    ids = [int(i) for i in request.POST.getlist("lead") if i.isdigit()]
    sdr = services.sdrs_team().filter(pk=request.POST.get("sdr") or 0).first()
    if sdr is None or not ids:
        return HttpResponseBadRequest(_("Choose leads and an SDR."))
    n = services.leads_reassign(lead_ids=ids, sdr=sdr, by=request.user)
    messages.success(request, _("%(n)s lead(s) reassigned to %(sdr)s.") % {"n": n, "sdr": person_name(sdr)})
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=False)
    return redirect(target if target and safe else "workspace:team")


@workspace_member
def inbox(request: HttpRequest) -> HttpResponse:
    items = list(
        Notification.objects.filter(user=request.user).select_related("lead").order_by("-created_at")[:100]
    )
    return render(request, "workspace/inbox.html", {**_common(request), "nav": "inbox", "items": items})


@workspace_member
@require_POST
def inbox_read(request: HttpRequest) -> HttpResponse:
    ids = [int(i) for i in request.POST.getlist("id") if i.isdigit()]
    services.notifications_read(user=request.user, ids=ids or None)
    return redirect("workspace:inbox")


@workspace_member
def inbox_badge(request: HttpRequest) -> HttpResponse:
    return render(request, "workspace/_badge.html", _common(request))
