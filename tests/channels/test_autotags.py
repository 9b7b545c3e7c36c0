"""Inbound messages and silence (`message_in` moves `last_inbound_at`), and the auto-tag rules: each
kind tags exactly the leads it should, once; the tag starts a `tag_added` sequence; the tick step reads
the dirty leads without taking them from the pools and costs the same queries for 10 or 200 leads."""

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.timezone import now as timezone_now

from channels.autotags import autotag_rule_preview, autotags_tick
from channels.models import AutoTagRule
from content.models import ContentAsset
from content.services import content_view_record
from leads.models import DirtyLead, Lead, LeadTag
from leads.pools import leads_mark_dirty, pools_evaluate_dirty
from leads.services import EventInput, event_record_bulk
from leads.tagging import tags_get_or_create
from sequences.models import Enrollment, Touch
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory, UserFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 0, tzinfo=SH)
pytestmark = pytest.mark.django_db


def tick(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def said(lead, at, text="你好", type="message_in"):
    event_record_bulk(
        items=[
            EventInput(
                type=type,
                occurred_at=at,
                properties={"channel": "wecom", "text": text},
                event_id=None,
                lead_id=lead.pk,
                identity=None,
            )
        ],
        now=at,
    )


def tagged(name: str) -> set[int]:
    return set(LeadTag.objects.filter(tag__name=name).values_list("lead_id", flat=True))


def rule(**fields) -> AutoTagRule:
    return AutoTagRule.objects.create(name=fields.pop("name", "规则"), **fields)


def settled(r: AutoTagRule, at: datetime) -> AutoTagRule:
    """As if its full pass ran just now: the next ticks look at dirty leads only."""
    AutoTagRule.objects.filter(pk=r.pk).update(last_applied_at=at, last_applied_count=0)
    r.refresh_from_db()
    return r


# --- Inbound messages and silence.


def test_message_in_through_the_api_moves_last_inbound_at(api):
    lead = LeadFactory()
    at = "2027-03-01T10:00:00+08:00"
    response = api.post(
        "/api/v1/events/",
        {
            "event_id": "archive-1",
            "lead": lead.pk,
            "type": "message_in",
            "occurred_at": at,
            "properties": {"text": "收到，谢谢"},
        },
        format="json",
    )
    assert response.status_code in (200, 201), response.content
    lead.refresh_from_db()
    assert lead.last_inbound_at == T0
    # Our own message out is no sign of life from the lead; an older message does not move it back.
    api.post(
        "/api/v1/events/",
        [
            {
                "event_id": "archive-2",
                "lead": lead.pk,
                "type": "message_out",
                "occurred_at": "2027-03-02T10:00:00+08:00",
            },
            {
                "event_id": "archive-3",
                "lead": lead.pk,
                "type": "message_in",
                "occurred_at": "2027-02-01T10:00:00+08:00",
            },
        ],
        format="json",
    )
    lead.refresh_from_db()
    assert lead.last_inbound_at == T0


def test_a_lead_who_spoke_is_not_silent_and_one_who_did_not_is(api):
    seq = sequence_save(
        data={
            "name": "沉默唤醒",
            "status": "active",
            "quiet_hours": None,
            "trigger": {"type": "silent", "days": 14},
        },
        steps=[{"day": 0, "send_time": None, "channel": "console", "text": "好久不见"}],
    )
    quiet, talker = LeadFactory(), LeadFactory()
    Lead.objects.filter(pk__in=[quiet.pk, talker.pk]).update(created_at=T0 - timedelta(days=40))
    starter = sequence_save(
        data={"name": "首触", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "console", "text": "您好"}],
    )
    sequence_enroll(
        sequence=starter,
        lead_ids=[quiet.pk, talker.pk],
        anchor_at=T0 - timedelta(days=30),
        now=T0 - timedelta(days=30),
    )
    tick(T0 - timedelta(days=30))  # both were contacted
    api.post(
        "/api/v1/events/",
        {
            "event_id": "wx-1",
            "lead": talker.pk,
            "type": "message_in",
            "occurred_at": (T0 - timedelta(days=3)).isoformat(),
        },
        format="json",
    )
    tick(T0)
    assert set(Enrollment.objects.filter(sequence=seq).values_list("lead_id", flat=True)) == {quiet.pk}


# --- The kinds.


def test_message_count_tags_leads_with_n_messages_within_d_days_once():
    many, old, few = LeadFactory(), LeadFactory(), LeadFactory()
    for hours in (1, 30, 100):
        said(many, T0 - timedelta(hours=hours))
    for days in (1, 2, 10):
        said(old, T0 - timedelta(days=days))
    for hours in (1, 2):
        said(few, T0 - timedelta(hours=hours))
    r = rule(kind="message_count", count=3, within_days=7, tag_name="behaviour:活跃")
    assert autotag_rule_preview(rule=r, now=T0).untagged == 1
    assert autotags_tick(T0) == {"tagged": 1, "full": 1}
    assert tagged("behaviour:活跃") == {many.pk}
    stamp = LeadTag.objects.get(tag__name="behaviour:活跃")
    assert (stamp.count, stamp.source, stamp.first_at) == (1, f"autotag:{r.pk}", T0)
    # More messages, more ticks: the tag is not counted up.
    said(many, T0 + timedelta(minutes=1))
    leads_mark_dirty(lead_ids=[many.pk], now=T0)
    autotags_tick(T0 + timedelta(minutes=2))
    autotags_tick(T0 + timedelta(hours=2))  # the hourly full pass
    assert LeadTag.objects.get(tag__name="behaviour:活跃").count == 1
    r.refresh_from_db()
    assert (r.last_applied_at, r.last_applied_count) == (T0 + timedelta(hours=2), 0)
    assert autotag_rule_preview(rule=r, now=T0).untagged == 0


def test_keyword_tags_the_leads_whose_message_says_a_keyword():
    asks, greets, we_said = LeadFactory(), LeadFactory(), LeadFactory()
    r = settled(rule(kind="keyword", keywords="报价，价格\nDEMO", tag_name="intent:询价"), T0)
    said(asks, T0, "请问企业版价格多少？")
    said(greets, T0, "你好，在吗")
    said(we_said, T0, "这是我们的价格表", type="message_out")
    also = LeadFactory()
    said(also, T0, "可以约个 demo 吗")
    assert autotags_tick(T0 + timedelta(minutes=1))["tagged"] == 2
    assert tagged("intent:询价") == {asks.pk, also.pk}
    r.refresh_from_db()
    assert r.last_applied_count == 2


def test_the_tick_reads_dirty_leads_only_and_leaves_them_for_the_pools():
    early, late = LeadFactory(), LeadFactory()
    said(early, T0 - timedelta(minutes=5), "价格")
    pools_evaluate_dirty(now=T0 - timedelta(minutes=4))  # the pools took it off the queue
    settled(rule(kind="keyword", keywords="价格", tag_name="intent:询价"), T0)
    said(late, T0, "价格")
    assert DirtyLead.objects.filter(lead=early).count() == 0
    autotags_tick(T0 + timedelta(minutes=1))
    assert tagged("intent:询价") == {late.pk}
    assert DirtyLead.objects.filter(lead=late).exists()  # still queued for the pools
    autotags_tick(T0 + timedelta(hours=1))  # the full pass finds the other one
    assert tagged("intent:询价") == {early.pk, late.pk}
    assert DirtyLead.objects.filter(lead=early).exists()  # a new tag: the pools look again


def test_no_reply_tags_leads_with_n_touches_since_their_last_message():
    silent, replied = LeadFactory(), LeadFactory()
    seq = sequence_save(
        data={"name": "培育", "status": "active", "quiet_hours": None},
        steps=[
            {"day": 0, "send_time": None, "channel": "console", "text": "第一条"},
            {"day": 1, "send_time": "10:00", "channel": "console", "text": "第二条"},
        ],
    )
    sequence_enroll(sequence=seq, lead_ids=[silent.pk, replied.pk], anchor_at=T0, now=T0)
    tick(T0)
    said(replied, T0 + timedelta(hours=2), "收到")
    tick(T0 + timedelta(days=1))
    assert Touch.objects.filter(state="sent").count() == 4
    rule(kind="no_reply", count=2, tag_name="behaviour:不回复")
    autotags_tick(T0 + timedelta(days=1, minutes=1))
    assert tagged("behaviour:不回复") == {silent.pk}


def test_content_tag_tags_leads_who_opened_content_with_the_tag():
    paper = ContentAsset.objects.create(
        slug="wp-dx", title="数字化转型白皮书", form="whitepaper", awareness="problem_aware", funnel="tofu"
    )
    paper.tags.set(tags_get_or_create(names=["topic:数字化"]).values())
    other = ContentAsset.objects.create(
        slug="case", title="案例", form="case_study", awareness="solution_aware", funnel="mofu"
    )
    reader, elsewhere = LeadFactory(), LeadFactory()
    settled(rule(kind="content_tag", content_tag="topic:数字化", tag_name="interest:数字化"), T0)
    content_view_record(asset=paper, lead=reader, now=T0)
    content_view_record(asset=other, lead=elsewhere, now=T0)
    autotags_tick(T0 + timedelta(minutes=1))
    assert tagged("interest:数字化") == {reader.pk}


def test_an_inactive_or_incomplete_rule_tags_nobody():
    lead = LeadFactory()
    said(lead, T0, "价格")
    rule(kind="keyword", keywords="价格", tag_name="intent:询价", active=False)
    rule(kind="keyword", keywords=" , ", tag_name="intent:空")
    rule(kind="message_count", count=None, within_days=3, tag_name="intent:缺N")
    autotags_tick(T0)
    assert not LeadTag.objects.exists()


def test_an_auto_tag_starts_a_tag_added_sequence():
    rule(kind="keyword", keywords="报价", tag_name="intent:询价")
    seq = sequence_save(
        data={
            "name": "询价跟进",
            "status": "active",
            "quiet_hours": None,
            "trigger": {"type": "tag_added", "tag": "intent:询价"},
        },
        steps=[{"day": 0, "send_time": None, "channel": "console", "text": "这是报价单"}],
    )
    tick(T0)  # the trigger's cursor starts here; the rule's first full pass
    lead = LeadFactory()
    said(lead, T0 + timedelta(minutes=1), "麻烦发一份报价")
    tick(T0 + timedelta(minutes=2))
    assert tagged("intent:询价") == {lead.pk}
    enrollment = Enrollment.objects.get(sequence=seq)
    assert enrollment.lead_id == lead.pk
    assert Touch.objects.get(enrollment=enrollment).state == "sent"
    tick(T0 + timedelta(minutes=3))
    assert Enrollment.objects.filter(sequence=seq).count() == 1


# --- Cost.


def _queries(n: int, at: datetime) -> int:
    leads = [LeadFactory() for _ in range(n)]
    for lead in leads:
        said(lead, at - timedelta(minutes=1), "价格")
    with CaptureQueriesContext(connection) as captured:
        autotags_tick(at)
    assert len(tagged("intent:询价")) >= n
    return len(captured)


def test_the_step_costs_the_same_queries_for_10_or_200_dirty_leads():
    for kind, extra in [
        ("keyword", {"keywords": "价格"}),
        ("message_count", {"count": 1, "within_days": 3}),
        ("no_reply", {"count": 5}),
        ("content_tag", {"content_tag": "topic:x"}),
    ]:
        settled(rule(kind=kind, tag_name="intent:询价" if kind == "keyword" else f"t:{kind}", **extra), T0)
    _queries(1, T0)  # the tags exist from here on
    small = _queries(10, T0 + timedelta(minutes=1))
    large = _queries(200, T0 + timedelta(minutes=2))
    # Per rule: its INSERT … SELECT (on SQLite three statements in a savepoint) and its count if it tagged.
    assert small == large <= (14 if connection.vendor == "postgresql" else 26)
    DirtyLead.objects.all().delete()
    with CaptureQueriesContext(connection) as idle:
        autotags_tick(T0 + timedelta(minutes=3))
    assert len(idle) == 2  # the rules, and whether any lead is dirty


def test_without_rules_the_step_is_one_query(django_assert_num_queries):
    with django_assert_num_queries(1):
        assert autotags_tick(T0) == {}


# --- The admin.


@pytest.fixture
def web(client):
    user = UserFactory(username="marketer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="nurture_channels"))
    client.force_login(user)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def test_the_editor_previews_and_a_change_asks_for_a_full_pass(web):
    lead = LeadFactory()
    said(lead, timezone_now() - timedelta(minutes=1), "价格")  # the admin previews as of the real clock
    add = web.post(
        "/admin/nurture_channels/autotagrule/add/",
        {
            "name": "询价",
            "kind": "keyword",
            "keywords": "价格",
            "tag_name": " intent : 询价 ",
            "content_tag": "",
            "active": "on",
        },
    )
    assert add.status_code == 302, add.context["adminform"].form.errors
    r = AutoTagRule.objects.get()
    assert r.tag_name == "intent:询价" and r.last_applied_at is None
    page = web.get(reverse("admin:nurture_channels_autotagrule_change", args=[r.pk])).content.decode()
    assert "Would tag 1 leads now (1 meet the rule)." in page
    applied = web.post(
        "/admin/nurture_channels/autotagrule/",
        {"action": "apply_rules", "_selected_action": [r.pk]},
        follow=True,
    )
    assert "询价: 1 leads tagged intent:询价." in [str(m) for m in get_messages(applied.wsgi_request)]
    r.refresh_from_db()
    assert r.last_applied_count == 1 and r.last_applied_at is not None
    web.post(
        reverse("admin:nurture_channels_autotagrule_change", args=[r.pk]),
        {
            "name": "询价",
            "kind": "keyword",
            "keywords": "价格\n报价",
            "tag_name": "intent:询价",
            "content_tag": "",
            "active": "on",
        },
    )
    r.refresh_from_db()
    assert r.last_applied_at is None  # the next tick runs it over every lead
    listing = web.get("/admin/nurture_channels/autotagrule/").content.decode()
    assert "价格, 报价" in listing


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "keyword", "keywords": " , "},
        {"kind": "message_count", "count": "", "within_days": "7"},
        {"kind": "no_reply", "count": ""},
        {"kind": "content_tag", "content_tag": ""},
    ],
)
def test_the_editor_refuses_incomplete_rules(web, data):
    response = web.post(
        "/admin/nurture_channels/autotagrule/add/", {"name": "r", "tag_name": "x:y", "active": "on", **data}
    )
    assert response.status_code == 200
    assert not AutoTagRule.objects.exists()
