"""The welcome message (`send_welcome_msg`) after an add: the code's text, 41051 never retried, transient
errors retried only inside WeCom's 20-second window."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils.timezone import now as timezone_now

from channels.models import ContactWay, WecomMember
from channels.wecom.welcome import welcome_send
from leads.models import Event, Lead
from leads.services import lead_upsert
from tests.channels.test_wecom_callback import deliver, eager_fixture, event_xml, wecom_fixture  # noqa: F401


def add_with_welcome(live_server, fake, external_userid: str, **fields: str) -> str:
    code = fake.issue_welcome_code()
    xml = event_xml(
        "add_external_contact",
        corp_id=fake.corp_id,
        UserID="zhangsan",
        ExternalUserID=external_userid,
        WelcomeCode=code,
        **fields,
    )
    assert deliver(live_server, xml, corp_id=fake.corp_id).text == "success"
    return code


@pytest.mark.django_db(transaction=True)
def test_the_qr_codes_welcome_text_is_rendered_and_sent(live_server, wecom):
    WecomMember.objects.create(userid="zhangsan", name="张三")
    ContactWay.objects.create(
        name="展会",
        state="expo",
        source="展会活码",
        user_ids=["zhangsan"],
        welcome_text="{{ lead.name|default:'您' }}好，我是{{ sender.name }}，展会资料稍后发您。",
    )
    wecom.befriend("zhangsan", "wmExpo")
    wecom.contacts["wmExpo"]["name"] = "赵敏"
    code = add_with_welcome(live_server, wecom, "wmExpo", State="expo")
    sent = wecom.calls("externalcontact/send_welcome_msg")
    assert [call.json for call in sent] == [
        {"welcome_code": code, "text": {"content": "赵敏好，我是张三，展会资料稍后发您。"}}
    ]
    lead = Lead.objects.get(wecom_external_userid="wmExpo")
    out = Event.objects.get(lead=lead, type="message_out")
    assert out.properties["kind"] == "welcome"


@pytest.mark.django_db(transaction=True)
def test_the_default_welcome_text_comes_from_the_setting(live_server, wecom, settings):
    settings.WECOM_WELCOME_TEXT = "欢迎！"
    add_with_welcome(live_server, wecom, "wmDefault")
    assert wecom.calls("externalcontact/send_welcome_msg")[0].json["text"] == {"content": "欢迎！"}


@pytest.mark.django_db(transaction=True)
def test_an_empty_welcome_text_sends_nothing(live_server, wecom, settings):
    settings.WECOM_WELCOME_TEXT = ""
    add_with_welcome(live_server, wecom, "wmQuiet")
    assert Lead.objects.filter(wecom_external_userid="wmQuiet").exists()
    assert not wecom.calls("externalcontact/send_welcome_msg")


@pytest.mark.django_db(transaction=True)
def test_41051_already_sent_is_not_retried(live_server, wecom):
    wecom.fail("externalcontact/send_welcome_msg", 41051, times=3)
    add_with_welcome(live_server, wecom, "wmChatted")
    assert len(wecom.calls("externalcontact/send_welcome_msg")) == 1
    assert Lead.objects.filter(wecom_external_userid="wmChatted").exists()
    assert not Event.objects.filter(type="message_out").exists()


@pytest.mark.django_db(transaction=True)
def test_a_busy_wecom_is_retried_inside_the_window(live_server, wecom):
    wecom.fail("externalcontact/send_welcome_msg", -1)  # system busy: retry after a short pause
    code = add_with_welcome(live_server, wecom, "wmBusy")
    assert len(wecom.calls("externalcontact/send_welcome_msg")) == 2
    assert wecom.welcome_codes[code] == "used"
    assert Event.objects.filter(type="message_out").count() == 1


@pytest.mark.django_db
def test_a_frequency_limit_longer_than_the_window_is_not_waited_for(wecom):
    lead = lead_upsert(data={"wecom_external_userid": "wmLimited"}).lead
    wecom.fail("externalcontact/send_welcome_msg", 45009)  # "retry in 60 s": past the 20-second window
    now = timezone_now()
    code = wecom.issue_welcome_code()
    status = welcome_send(
        welcome_code=code,
        lead_id=lead.pk,
        user_id="zhangsan",
        contact_way_id=None,
        deadline=now + timedelta(seconds=20),
        now=now,
    )
    assert status == "failed"
    assert len(wecom.calls("externalcontact/send_welcome_msg")) == 1


@pytest.mark.django_db
def test_past_the_window_wecom_is_not_asked(wecom):
    lead = lead_upsert(data={"wecom_external_userid": "wmLate"}).lead
    now = timezone_now()
    status = welcome_send(
        welcome_code=wecom.issue_welcome_code(),
        lead_id=lead.pk,
        user_id="zhangsan",
        contact_way_id=None,
        deadline=now - timedelta(seconds=1),
        now=now,
    )
    assert status == "expired"
    assert not wecom.calls("externalcontact/send_welcome_msg")
