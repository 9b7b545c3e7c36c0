"""Acting on WeCom's callbacks: edits and deletions, unionid merges, a lost task picked up by the tick,
a crash rolled back and processed again. Payloads are encrypted by wechatpy and posted over HTTP."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils.timezone import now as timezone_now

from channels.inbound import inbound_process_pending
from channels.models import InboundPayload
from leads.models import Event, Lead
from leads.services import lead_upsert
from nurture.engine import tick
from tests.channels.test_wecom_callback import CREATED, deliver, eager_fixture, event_xml, wecom_fixture  # noqa: F401


def add(live_server, fake, external_userid: str, *, userid: str = "zhangsan", **fields: str):
    xml = event_xml(
        "add_external_contact",
        corp_id=fake.corp_id,
        UserID=userid,
        ExternalUserID=external_userid,
        **fields,
    )
    return deliver(live_server, xml, corp_id=fake.corp_id)


@pytest.mark.django_db(transaction=True)
def test_the_customer_deleting_the_staff_member_records_wecom_deleted(live_server, wecom):
    add(live_server, wecom, "wmLeaver")
    lead = Lead.objects.get(wecom_external_userid="wmLeaver")
    assert lead.wecom_follow_user == "zhangsan"
    xml = event_xml(
        "del_follow_user",
        corp_id=wecom.corp_id,
        created=CREATED + timedelta(days=3),
        UserID="zhangsan",
        ExternalUserID="wmLeaver",
    )
    assert deliver(live_server, xml, corp_id=wecom.corp_id).text == "success"
    deleted = Event.objects.get(lead=lead, type="wecom_deleted")
    assert deleted.properties == {"by": "customer", "userid": "zhangsan"}
    assert deleted.occurred_at == CREATED + timedelta(days=3)
    lead.refresh_from_db()
    assert lead.wecom_follow_user == ""


@pytest.mark.django_db(transaction=True)
def test_staff_removing_the_customer_records_wecom_deleted_by_staff(live_server, wecom):
    add(live_server, wecom, "wmRemoved", userid="lisi")
    add(live_server, wecom, "wmRemoved", userid="wangwu", State="second")  # a second member adds it too
    lead = Lead.objects.get(wecom_external_userid="wmRemoved")
    assert lead.wecom_follow_user == "wangwu"
    xml = event_xml("del_external_contact", corp_id=wecom.corp_id, UserID="lisi", ExternalUserID="wmRemoved")
    deliver(live_server, xml, corp_id=wecom.corp_id)
    deleted = Event.objects.get(lead=lead, type="wecom_deleted")
    assert deleted.properties == {"by": "staff", "userid": "lisi"}
    lead.refresh_from_db()
    assert lead.wecom_follow_user == "wangwu"  # another member's removal leaves the follow-up member


@pytest.mark.django_db(transaction=True)
def test_a_deletion_for_an_unknown_customer_is_stored_and_creates_nothing(live_server, wecom):
    xml = event_xml("del_follow_user", corp_id=wecom.corp_id, UserID="zhangsan", ExternalUserID="wmNobody")
    assert deliver(live_server, xml, corp_id=wecom.corp_id).status_code == 200
    assert not Lead.objects.exists()
    payload = InboundPayload.objects.get()
    assert payload.processed_at is not None and "no lead" in payload.error


@pytest.mark.django_db(transaction=True)
def test_an_edit_refreshes_the_details(live_server, wecom):
    add(live_server, wecom, "wmEdited")  # unknown to WeCom's get (40096): the add is kept all the same
    lead = Lead.objects.get(wecom_external_userid="wmEdited")
    assert lead.name == "" and Event.objects.filter(lead=lead, type="wecom_added").exists()
    wecom.befriend("zhangsan", "wmEdited")
    wecom.contacts["wmEdited"].update(name="王芳", corp_full_name="芳华制造有限公司")
    wecom.contacts["wmEdited"]["_follow"] = {"zhangsan": {"remark": "王总"}}
    xml = event_xml(
        "edit_external_contact", corp_id=wecom.corp_id, UserID="zhangsan", ExternalUserID="wmEdited"
    )
    deliver(live_server, xml, corp_id=wecom.corp_id)
    lead.refresh_from_db()
    assert (lead.name, lead.company) == ("王芳", "芳华制造有限公司")
    assert lead.properties["wecom_remark"] == "王总"
    assert Event.objects.filter(lead=lead, type="wecom_edited").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_unionid_from_wecom_merges_the_wechat_lead(live_server, wecom):
    wechat = lead_upsert(data={"wechat_unionid": "oUnionShared", "phone": "+8613900000009"}).lead
    wecom.befriend("zhangsan", "wmMerged")
    wecom.contacts["wmMerged"]["unionid"] = "oUnionShared"
    add(live_server, wecom, "wmMerged")
    lead = Lead.objects.get(wecom_external_userid="wmMerged")
    assert Lead.objects.count() == 1
    assert lead.pk == wechat.pk and lead.phone == "+8613900000009"


@pytest.mark.django_db(transaction=True)
def test_an_unknown_event_is_stored_and_marked_processed(live_server, wecom):
    xml = (
        f"<xml><ToUserName><![CDATA[{wecom.corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        "<CreateTime>1764576000</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrChat]]></ChatId>"
        "<ChangeType><![CDATA[create]]></ChangeType></xml>"
    )
    assert deliver(live_server, xml, corp_id=wecom.corp_id).text == "success"
    payload = InboundPayload.objects.get()
    assert payload.kind == "create" and payload.body["ChatId"] == "wrChat"
    assert payload.processed_at is not None
    assert not Lead.objects.exists()


@pytest.fixture
def lost_tasks():
    """Tasks go to the broker and no worker takes them: the task is lost."""
    from nurture.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = before
    app.control.purge()


@pytest.mark.django_db(transaction=True)
def test_a_lost_task_is_picked_up_by_the_tick(live_server, wecom, lost_tasks):
    code = wecom.issue_welcome_code()
    add(live_server, wecom, "wmLost", State="lost-qr", WelcomeCode=code)
    payload = InboundPayload.objects.get()
    assert payload.processed_at is None and not Lead.objects.exists()

    assert inbound_process_pending(timezone_now()) == {}  # not a minute old yet: its task may still come
    report = tick(now=timezone_now() + timedelta(minutes=2))

    assert report.steps["inbound"] == {"processed": 1}
    lead = Lead.objects.get(wecom_external_userid="wmLost")
    assert lead.source == "lost-qr" and lead.wecom_follow_user == "zhangsan"
    assert Event.objects.get(lead=lead, type="wecom_added").occurred_at == CREATED
    payload.refresh_from_db()
    assert payload.processed_at is not None
    # The welcome code expired 20 s after the add: WeCom is not asked.
    assert not wecom.calls("externalcontact/send_welcome_msg")
    call_command("tick", "--now", (timezone_now() + timedelta(minutes=3)).isoformat(), stdout=io.StringIO())
    assert Event.objects.filter(type="wecom_added").count() == 1


def _break_marking_processed() -> None:
    """Setting processed_at fails (as a lost connection would), after every effect was written."""
    table = InboundPayload._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION test_refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER test_refuse BEFORE UPDATE ON {table} FOR EACH ROW "
                "WHEN (NEW.processed_at IS NOT NULL) EXECUTE FUNCTION test_refuse()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER test_refuse BEFORE UPDATE ON {table} WHEN NEW.processed_at IS NOT NULL "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )


def _repair_marking_processed() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"DROP TRIGGER test_refuse ON {InboundPayload._meta.db_table}")
            cursor.execute("DROP FUNCTION test_refuse()")
        else:
            cursor.execute("DROP TRIGGER test_refuse")


@pytest.mark.django_db(transaction=True)
def test_a_crash_in_processing_rolls_back_and_the_payload_is_processed_later(live_server, wecom):
    _break_marking_processed()
    try:
        answer = add(live_server, wecom, "wmCrash", State="crash-qr")
        assert answer.status_code == 200 and answer.text == "success"  # stored: WeCom need not retry
        payload = InboundPayload.objects.get()
        assert payload.processed_at is None and payload.attempts == 1 and "disk full" in payload.error
        # The lead and its event were written before the crash: rolled back with it.
        assert not Lead.objects.exists() and not Event.objects.exists()
    finally:
        _repair_marking_processed()

    report = tick(now=timezone_now() + timedelta(minutes=2))

    assert report.steps["inbound"] == {"processed": 1}
    lead = Lead.objects.get(wecom_external_userid="wmCrash")
    assert Event.objects.filter(lead=lead, type="wecom_added").count() == 1
    payload.refresh_from_db()
    assert payload.processed_at is not None and payload.attempts == 2 and payload.error == ""


@pytest.mark.django_db
def test_the_tick_step_costs_one_query_when_nothing_is_pending(django_assert_num_queries):
    with django_assert_num_queries(1):
        assert inbound_process_pending(timezone_now()) == {}
