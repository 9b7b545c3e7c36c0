"""The demo data set (`load_demo`): its shape, its users, and that loading it again adds nothing."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count, Sum
from django.test import override_settings

from channels.registry import adapters_reset
from leads import demo
from leads.demo import DEMO_PASSWORD, DEMO_USERS, DemoContext, demo_load
from leads.identity import normalize_phone
from leads.models import Event, Lead, LeadTag, Stage, StageChange, Tag
from sequences.models import Enrollment, Sequence, Step, Touch
from workspace.models import Assignment, LeadNote, Notification, SdrProfile, WorkspaceSettings
from workspace.selectors import QueueFilters, queue_leads

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _snapshot() -> dict[str, object]:
    return {
        "leads": Lead.objects.count(),
        "stages": dict(Lead.objects.values_list("stage").annotate(n=Count("id"))),
        "events": Event.objects.count(),
        "tags": Tag.objects.count(),
        "lead_tags": LeadTag.objects.count(),
        "tag_stamps": LeadTag.objects.aggregate(n=Sum("count"))["n"],
        "stage_changes": StageChange.objects.count(),
        "users": get_user_model().objects.count(),
        "groups": dict(get_user_model().objects.values_list("username").annotate(n=Count("groups"))),
        "sequences": sorted(Sequence.objects.values_list("pk", "name", "status", "updated_at")),
        "steps": sorted(Step.objects.values_list("pk", "sequence_id", "position")),
        "enrollments": sorted(Enrollment.objects.values_list("pk", "state", "position", "next_due_at")),
        "touches": sorted(Touch.objects.values_list("pk", "state", "step_id")),
        "assignments": sorted(
            Assignment.objects.values_list(
                "pk", "lead_id", "sdr_id", "followed_up_at", "breached_at", "ended_at"
            )
        ),
        "notifications": sorted(Notification.objects.values_list("pk", "user_id", "kind", "assignment_id")),
        "lead_notes": sorted(LeadNote.objects.values_list("pk", "lead_id", "text")),
        "sdr_profiles": sorted(SdrProfile.objects.values_list("user_id", "available", "wecom_userid")),
        "workspace_settings": WorkspaceSettings.objects.count(),
        "owners": dict(Lead.objects.values_list("owner__username").annotate(n=Count("id"))),
    }


# One test for the full-size set: loading it takes a few seconds on PostgreSQL, so it is loaded once.
@pytest.mark.slow
def test_demo_load_builds_a_chinese_b2b_funnel_and_a_reload_adds_nothing():
    counts = demo_load(now=NOW)

    assert 1900 <= Lead.objects.count() <= 2100
    assert counts["leads_created"] == counts["leads"] == Lead.objects.count()
    assert Event.objects.count() > 5 * Lead.objects.count()
    phones = list(Lead.objects.exclude(phone=None).values_list("phone", flat=True))
    assert len(phones) > 1000
    assert all(
        phone.startswith("+86") and len(phone) == 14 and normalize_phone(phone) == phone for phone in phones
    )
    stages = dict(Lead.objects.values_list("stage").annotate(n=Count("id")))
    assert stages[Stage.RL] + stages[Stage.MIL] > 0.6 * sum(stages.values())
    assert all(stages.get(stage, 0) > 10 for stage in Stage.values)
    for outcome in (Stage.WON, Stage.LOST):
        changes = StageChange.objects.filter(to_stage=outcome)
        assert changes.count() == stages[outcome]
        assert not changes.filter(amount=None).exists() and not changes.filter(reason="").exists()
    assert (
        Lead.objects.filter(owner__username="sdr1").exists()
        and Lead.objects.filter(owner__username="sdr2").exists()
    )
    assert Lead.objects.filter(wecom_external_userid__startswith="wm").count() > 200
    assert {"industry", "need", "topic", "form"} <= set(Tag.objects.values_list("group", flat=True))
    assert Tag.objects.filter(name="form:白皮书").exists()
    times = Event.objects.values_list("occurred_at", flat=True)
    assert NOW - timedelta(days=91) < min(times) and max(times) <= NOW
    assert NOW - timedelta(days=91) < min(Lead.objects.values_list("created_at", flat=True))
    assert set(Event.objects.values_list("type", flat=True)) >= {
        "registered",
        "form_submitted",
        "wecom_added",
        "message_in",
        "message_out",
        "content_viewed",
        "link_clicked",
        "webinar_registered",
        "webinar_attended",
        "trial_started",
        "email_opened",
    }
    viewed = Event.objects.filter(type="content_viewed").first()
    assert {"asset", "title", "form"} <= set(viewed.properties)
    _assert_sequences_ran_for_weeks()
    _assert_sdrs_have_a_working_day(counts)
    first = _snapshot()

    again = demo_load(now=NOW + timedelta(hours=20))

    assert _snapshot() == first
    assert again["leads_created"] == again["events_created"] == again["stage_changes_created"] == 0
    assert again["lead_tags_stamped"] == again["users_created"] == again["sequences_created"] == 0
    assert again["sdr_profiles_created"] == again["workspace_day_made"] == 0

    # The first tick of `make demo` sends what fell due since the history stopped, 20 hours before.
    tick_at = NOW + timedelta(minutes=5)
    with override_settings(NURTURE_CHANNEL_ADAPTERS=settings.NURTURE_DEMO_CHANNEL_ADAPTERS):  # as make demo
        adapters_reset()
        call_command("tick", "--now", tick_at.isoformat(), stdout=io.StringIO())
    adapters_reset()

    sent_now = Touch.objects.filter(state="sent", sent_at=tick_at)
    assert sent_now.count() >= 5
    assert not sent_now.filter(rendered="").exists()
    assert Touch.objects.filter(channel="call", mode="task", state="task_open").exists()
    assert not Touch.objects.filter(skip_reason__in=["stale", "not_configured"]).exists()


def _assert_sequences_ran_for_weeks() -> None:
    """Weeks of history: every sequence enrolled leads and sent on the console; both branches of the
    high-value SOP were taken; owners have call tasks open and done."""
    sequences = {s.name: s for s in Sequence.objects.all()}
    assert set(sequences) == {"新好友6次触达", "高价值池场景培育", "沉默客户激活"}
    for sequence in sequences.values():
        assert sequence.status == "active"
        assert sequence.enrollments.count() >= 20, sequence.name
        assert sequence.touches.filter(state="sent").count() >= 20, sequence.name
    # Every kind of touch, each through the console (nothing reached a provider, nothing not configured).
    sent = set(Touch.objects.filter(state="sent").values_list("channel", flat=True))
    assert sent == {"wecom", "wecom_moment", "wechat_oa", "sms", "email"}
    assert not Touch.objects.filter(skip_reason="not_configured").exists()

    welcome = sequences["新好友6次触达"].touches.filter(step__position=0, state="sent").first()
    assert welcome.rendered.startswith(f"{welcome.lead.name}，您好") and "/c/" in welcome.rendered
    anchor = Event.objects.filter(lead=welcome.lead, type="wecom_added").earliest("occurred_at")
    assert welcome.enrollment.anchor_at == anchor.occurred_at
    assert timedelta(0) <= welcome.sent_at - anchor.occurred_at < timedelta(hours=11)  # at once, or 08:00
    by_lead_industry = sequences["新好友6次触达"].touches.filter(
        step__position__in=range(1, 8), state="sent", lead__industry="制造"
    )
    assert by_lead_industry.exists()
    assert set(by_lead_industry.values_list("content_id", flat=True)) == {
        by_lead_industry.first().step.content_id
    }

    high = sequences["高价值池场景培育"].touches
    assert high.filter(step__position=0, state="sent").exists()  # need known: the solution
    assert high.filter(step__position=1, state="sent").exists()  # else the strategy
    assert high.filter(step__position=2, state="sent").exists()  # read it: the solution too
    assert high.filter(step__position=2, state="skipped", skip_reason="wait_for_not_met").exists()
    assert high.filter(step__position=3, state="sent").exclude(content_id=None).exists()  # recommended
    assert Event.objects.filter(type="content_viewed", properties__via="link").exists()

    silent = sequences["沉默客户激活"].enrollments
    assert silent.filter(end_reason="exit_rule").exists()  # replied: awake again
    tasks = Touch.objects.filter(channel="call", mode="task")
    assert tasks.filter(state="task_open").exists() and tasks.filter(state="task_done").exists()


def _assert_sdrs_have_a_working_day(counts: dict[str, int]) -> None:
    """sdr1 finds hot leads to claim and leads of its own under the SLA; the manager has an escalation;
    the day holds a follow-up with a call and a note, an SQL and a lead returned to nurturing."""
    User = get_user_model()
    sdr1, sdr2, manager = (User.objects.get(username=name) for name in ("sdr1", "sdr2", "manager"))
    assert counts["workspace_day_made"] == 1
    assert {p.user.username: (p.available, bool(p.wecom_userid)) for p in SdrProfile.objects.all()} == {
        "sdr1": (True, True),
        "sdr2": (True, True),
    }
    queue = queue_leads(user=sdr1, filters=QueueFilters())
    unassigned = queue.filter(owner=None).count()
    assert 15 <= unassigned <= 40 and unassigned == counts["hot_queue_unassigned"]
    assert not queue.filter(owner=sdr2).exists()
    mine = Assignment.objects.filter(sdr=sdr1, ended_at=None)
    assert mine.filter(followed_up_at=None, breached_at=None).count() >= 2  # the SLA clock running
    assert mine.exclude(followed_up_at=None).exists()
    # NOW is a Monday 10:00 in Shanghai: one of them is due within the hour, and sdr1 was warned.
    warned = Notification.objects.get(user=sdr1, kind=Notification.Kind.SLA_WARNING)
    assert NOW < warned.assignment.first_touch_due <= NOW + timedelta(hours=1)
    assert all(a.lead.owner_id == sdr1.pk for a in mine.select_related("lead"))
    breached = Assignment.objects.get(breached_at__isnull=False)
    assert breached.sdr == sdr2 and breached.reassign_at > NOW and breached.ended_at is None
    escalation = Notification.objects.get(user=manager, kind=Notification.Kind.ESCALATION)
    assert escalation.assignment == breached and escalation.read_at is None
    assert Notification.objects.filter(user=sdr2, kind="sla_breached", assignment=breached).exists()
    assert Event.objects.filter(
        type="call_logged", properties__by="sdr1", occurred_at__gt=NOW - timedelta(days=3)
    )
    assert LeadNote.objects.filter(author=sdr1).exists()
    qualified = Assignment.objects.get(end_reason=Assignment.End.SQL)
    assert qualified.lead.stage == Stage.SQL and qualified.sdr == sdr1
    returned = Assignment.objects.get(end_reason=Assignment.End.RETURNED)
    assert returned.lead.stage == Stage.RECYCLED and returned.lead.owner is None
    high_value = Sequence.objects.get(name="高价值池场景培育")
    assert Enrollment.objects.filter(lead=returned.lead, sequence=high_value).exists()
    assert all(a.assigned_at <= NOW for a in Assignment.objects.all())


def test_demo_users_log_in_to_the_admin(client, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_LOADERS", ["leads.demo.demo_users_load"])
    demo_load(now=NOW)
    demo_load(now=NOW)

    User = get_user_model()
    assert User.objects.filter(username__in=DEMO_USERS).count() == 4
    for username, (group, _, _) in DEMO_USERS.items():
        user = User.objects.get(username=username)
        assert user.is_staff and list(user.groups.values_list("name", flat=True)) == [group]
        client.logout()
        response = client.post(
            "/admin/login/?next=/admin/", {"username": username, "password": DEMO_PASSWORD, "next": "/admin/"}
        )
        assert response.status_code == 302 and response["Location"] == "/admin/", username
        assert client.get("/admin/leads/lead/").status_code == 200, username

    marketer, sdr, manager = (User.objects.get(username=name) for name in ("marketer", "sdr1", "manager"))
    assert marketer.has_perms(
        ["leads.delete_lead", "leads.add_keywordtagrule", "django_celery_beat.add_periodictask"]
    )
    assert manager.has_perms(["leads.add_lead", "leads.delete_event"])
    assert not manager.has_perm("django_celery_beat.add_periodictask")
    assert sdr.has_perms(["leads.view_lead", "leads.change_lead"])
    assert not sdr.has_perm("leads.delete_lead") and not sdr.has_perm("leads.view_apikey")


def _later_loader(ctx: DemoContext) -> dict[str, int]:
    return {"later_loader_saw_users": get_user_model().objects.filter(username__in=DEMO_USERS).count()}


def test_later_issues_append_their_loaders(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_LOADERS", ["leads.demo.demo_users_load", f"{__name__}._later_loader"])

    counts = demo_load(now=NOW)

    assert counts["users"] == counts["later_loader_saw_users"] == 4


def test_demo_sequences_are_the_field_sops_on_the_demo_content(monkeypatch):
    monkeypatch.setattr(
        demo,
        "DEMO_LOADERS",
        [
            "leads.demo.demo_users_load",
            "content.demo.demo_content_load",
            "sequences.demo.demo_sequences_load",
        ],
    )
    counts = demo_load(now=NOW)

    assert counts["sequences"] == counts["sequences_created"] == 3
    sequences = {s.name: s for s in Sequence.objects.prefetch_related("steps__content")}
    new_friends, high, silent = (sequences[n] for n in ("新好友6次触达", "高价值池场景培育", "沉默客户激活"))
    assert new_friends.trigger == {"type": "wecom_added"}
    assert high.trigger == {"type": "pool_entered", "pool": "value-high"}
    assert silent.trigger == {"type": "silent", "days": 14}
    assert {s.status for s in sequences.values()} == {"active"}
    assert all(s.goal for s in sequences.values())

    steps = list(new_friends.steps.order_by("position"))
    sent = [s for s in steps if s.mode == "auto" and (s.condition is None or s.position == 7)]
    assert [s.day for s in sent] == [0, 1, 3, 7, 14]  # one case per lead on day 1: position 7 catches all
    assert steps[0].send_time is None and steps[0].content.slug == "wp-online-acquisition"
    assert {s.content.slug for s in steps if s.day == 1} >= {"case-manufacturing", "case-saas-mql"}
    assert [s.content.slug for s in steps if s.day in (3, 7, 14)] == [
        "scenario-02",
        "trial-14-days",
        "webinar-live-acquisition",
    ]
    call = steps[-1]
    assert (call.day, call.channel, call.mode, call.content) == (30, "call", "task", None)
    assert [s.channel for s in steps if s in sent] == ["wecom", "wecom", "wecom_moment", "sms", "email"]

    steps = list(high.steps.order_by("position"))
    assert (steps[0].day, steps[0].condition, steps[0].else_position) == (3, {"tag": "need:全渠道获客"}, 1)
    assert steps[0].content.slug == steps[2].content.slug == "scenario-01"
    assert steps[1].content.slug == "article-content-bait" and steps[1].else_position == 3
    assert steps[2].day == 6 and steps[2].wait_for == {
        "event": "content_viewed",
        "where": {"asset": "article-content-bait"},
        "within_days": 3,
    }
    assert [(s.day, s.recommended) for s in steps[3:6]] == [(10, True), (17, True), (24, True)]
    cases = steps[6:13]
    assert {s.day for s in cases} == {31} and all(s.content.form == "case_study" for s in cases)
    assert [s.else_position for s in cases] == list(range(7, 14))
    assert steps[-1].content.slug == "demo-booking"
    assert high.on_complete == {
        "hot": {"action": "assign_sdr"},
        "cold": {"action": "tag", "tag": "value:low"},
    }

    assert [s.day for s in silent.steps.order_by("position")] == [0, 3, 7]
    assert silent.exit_rule == {"days_since": "last_inbound_at", "lt": 1}

    again = demo_load(now=NOW + timedelta(hours=20))

    assert again["sequences_created"] == 0 and Sequence.objects.count() == 3
    assert {s.pk: s.steps.count() for s in Sequence.objects.all()} == {
        s.pk: s.steps.count() for s in sequences.values()
    }
