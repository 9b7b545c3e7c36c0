"""The official-account adapter against a fake WeChat over real HTTP: template and customer-service
requests, client_msg_id, token refresh, errcodes, and the 48-hour window end to end through the tick's
dispatch (inside: customer-service message; outside: the step's fallback channel, or skipped)."""

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command

from channels.adapters.base import OutgoingMessage, PermanentError, RetryableError, SendStatus
from channels.registry import adapter_for, adapters_reset
from nurture.models import OutboxMessage
from sequences.dispatch import touches_dispatch
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.channels.fake_wechat_oa import fake_oa_running
from tests.factories import LeadFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 0, tzinfo=SH)
pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_oa(settings):
    with fake_oa_running(settings) as fake:
        yield fake


def tick(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def follower(fake, openid="oFOLLOWER1", *, interaction_at=None, **fields):
    fake.follow(openid)
    return LeadFactory(wechat_openid=openid, wechat_oa_interaction_at=interaction_at, **fields)


def enroll(lead, *, else_channel="", text="{{ lead.name }}，您好：新版白皮书已发布"):
    seq = sequence_save(
        data={"name": "公众号", "status": "active", "quiet_hours": None},
        steps=[
            {"day": 0, "send_time": None, "channel": "wechat_oa", "text": text, "else_channel": else_channel}
        ],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    return seq


def message(lead, **over):
    data = {
        "touch_id": 1,
        "idempotency_key": "e1-p0",
        "channel": "wechat_oa",
        "lead_id": lead.pk,
        "lead": {
            "name": lead.name,
            "wechat_openid": lead.wechat_openid or "",
            "wechat_oa_interaction_at": lead.wechat_oa_interaction_at,
        },
        "text": "新版白皮书已发布，点击查看详情与下载，限时免费",
        "link": "https://example.com/c/abc/",
        "content_title": "制造业数字化白皮书",
    }
    data.update(over)
    return OutgoingMessage(**data)


# --- Request shapes.


def test_outside_the_window_a_template_goes_with_client_msg_id_url_and_mapped_fields(fake_oa):
    lead = follower(fake_oa, interaction_at=T0 - timedelta(days=5))
    adapter = adapter_for("wechat_oa")
    assert adapter.policy_check(message(lead), T0).allowed
    with time_machine.travel(T0, tick=False):
        result = adapter.send(message(lead))
    assert result.status == SendStatus.SENT
    (call,) = fake_oa.calls("message/template/send")
    body = call.json
    assert body["touser"] == "oFOLLOWER1"
    assert body["template_id"] == fake_oa.template_id
    assert body["client_msg_id"] == "e1-p0"
    assert body["url"] == "https://example.com/c/abc/"
    assert body["data"] == {
        "thing1": {"value": "新版白皮书已发布，点击查看详情与下载，…"},  # cut to 20 characters
        "thing2": {"value": "制造业数字化白皮书"},
        "remark": {"value": "谢谢关注"},
    }
    assert result.provider_ref == str(fake_oa.sent[("oFOLLOWER1", "e1-p0")])
    assert call.headers["content-type"].startswith("application/json")
    assert not fake_oa.calls("message/custom/send")


def test_inside_the_window_a_customer_service_text_goes_with_the_link(fake_oa):
    lead = follower(fake_oa, interaction_at=T0 - timedelta(hours=47))
    with time_machine.travel(T0, tick=False):
        result = adapter_for("wechat_oa").send(message(lead))
    assert (result.status, result.provider_ref) == (SendStatus.SENT, "")
    (call,) = fake_oa.calls("message/custom/send")
    assert call.json == {
        "touser": "oFOLLOWER1",
        "msgtype": "text",
        "text": {"content": "新版白皮书已发布，点击查看详情与下载，限时免费\nhttps://example.com/c/abc/"},
    }
    assert not fake_oa.calls("message/template/send")


def test_the_same_key_twice_is_one_template_at_wechat(fake_oa, settings):
    settings.WECHAT_OA_MODE = "template"
    lead = follower(fake_oa)
    adapter = adapter_for("wechat_oa")
    assert adapter.honours_idempotency_key
    first = adapter.send(message(lead))
    second = adapter.send(message(lead))
    assert first.provider_ref == second.provider_ref
    assert len(fake_oa.sent) == 1
    assert [c.json["client_msg_id"] for c in fake_oa.calls("message/template/send")] == ["e1-p0", "e1-p0"]


def test_an_expired_token_is_refreshed_once_and_the_call_retried(fake_oa):
    lead = follower(fake_oa)
    adapter = adapter_for("wechat_oa")
    adapter.send(message(lead))
    assert len(fake_oa.calls("stable_token")) == 1
    adapter.send(message(lead, idempotency_key="e1-p1"))
    assert len(fake_oa.calls("stable_token")) == 1  # cached
    fake_oa.expire_tokens()
    result = adapter.send(message(lead, idempotency_key="e1-p2"))
    assert result.status == SendStatus.SENT
    assert len(fake_oa.calls("stable_token")) == 2
    tokens = [c.query["access_token"] for c in fake_oa.calls("message/template/send")]
    assert tokens[0] == tokens[1] == tokens[2] != tokens[3]
    token_body = fake_oa.calls("stable_token")[0].json
    assert token_body == {
        "grant_type": "client_credential",
        "appid": fake_oa.app_id,
        "secret": fake_oa.secret,
    }


def test_a_token_refused_twice_is_a_retryable_error(fake_oa):
    lead = follower(fake_oa)
    fake_oa.fail("message/template/send", 40001, 40001)
    with pytest.raises(RetryableError):
        adapter_for("wechat_oa").send(message(lead))
    assert len(fake_oa.calls("message/template/send")) == 2


@pytest.mark.parametrize(
    ("errcode", "outcome"),
    [(-1, "retry"), (45009, "retry"), (43004, "permanent"), (40003, "permanent"), (45015, "policy")],
)
def test_errcodes(fake_oa, errcode, outcome):
    lead = follower(fake_oa, interaction_at=T0 - timedelta(hours=1))
    path = "message/custom/send" if errcode == 45015 else "message/template/send"
    fake_oa.fail(path, errcode)
    adapter = adapter_for("wechat_oa")
    with time_machine.travel(T0 if errcode == 45015 else T0 + timedelta(days=3), tick=False):
        if outcome == "retry":
            with pytest.raises(RetryableError):
                adapter.send(message(lead))
        elif outcome == "permanent":
            with pytest.raises(PermanentError) as raised:
                adapter.send(message(lead))
            assert raised.value.code == str(errcode)
        else:
            result = adapter.send(message(lead))
            assert (result.status, result.reason) == (SendStatus.SKIPPED_POLICY, "outside_48h")


def test_settings_decide_whether_the_channel_is_configured(fake_oa, settings):
    settings.WECHAT_OA_SECRET = ""
    adapters_reset()
    assert adapter_for("wechat_oa") is None
    settings.WECHAT_OA_SECRET = fake_oa.secret
    settings.WECHAT_OA_MODE = "template"
    settings.WECHAT_OA_TEMPLATE_ID = ""
    adapters_reset()
    assert adapter_for("wechat_oa") is None  # templates only, and no template
    settings.WECHAT_OA_MODE = "custom"
    adapters_reset()
    assert adapter_for("wechat_oa") is not None


def test_a_lead_without_openid_is_refused_by_policy(fake_oa):
    lead = LeadFactory()
    verdict = adapter_for("wechat_oa").policy_check(message(lead), T0)
    assert (verdict.allowed, verdict.reason) == (False, "no_openid")


# --- The 48-hour window, end to end through the tick.


def test_inside_the_window_the_touch_is_a_customer_service_message(fake_oa, settings):
    settings.WECHAT_OA_MODE = "custom"
    lead = follower(fake_oa, interaction_at=T0 - timedelta(hours=20), name="王磊")
    enroll(lead)
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert (touch.state, touch.channel) == ("sent", "wechat_oa"), touch.error
    (call,) = fake_oa.calls("message/custom/send")
    assert call.json["text"]["content"] == "王磊，您好：新版白皮书已发布"


def test_outside_the_window_the_fallback_channel_carries_the_touch(fake_oa, settings):
    settings.WECHAT_OA_MODE = "custom"
    lead = follower(fake_oa, interaction_at=T0 - timedelta(hours=49))
    enroll(lead, else_channel="console")
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert (touch.state, touch.channel) == ("sent", "console")
    assert not fake_oa.calls("message/custom/send")


def test_outside_the_window_without_fallback_the_touch_is_skipped_with_the_reason(fake_oa, settings):
    settings.WECHAT_OA_MODE = "custom"
    lead = follower(fake_oa, interaction_at=None)
    enroll(lead)
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert (touch.state, touch.skip_reason) == ("skipped", "policy:outside_48h")
    assert not fake_oa.calls("message/custom/send") and not fake_oa.calls("message/template/send")


def test_auto_mode_sends_a_template_outside_the_window(fake_oa):
    lead = follower(fake_oa, interaction_at=T0 - timedelta(days=3))
    seq = enroll(lead, else_channel="console")
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert (touch.state, touch.channel) == ("sent", "wechat_oa")
    (call,) = fake_oa.calls("message/template/send")
    assert (
        call.json["client_msg_id"] == touch.idempotency_key == f"e{lead.enrollments.get(sequence=seq).pk}-p0"
    )
    assert touch.provider_ref == str(call_msgid(fake_oa, touch))
    assert "url" not in call.json  # the step carries no content, so no link


def call_msgid(fake, touch):
    return fake.sent[(touch.lead.wechat_openid, touch.idempotency_key)]


def test_a_user_who_unfollowed_fails_the_touch_and_announces_it(fake_oa):
    lead = LeadFactory(wechat_openid="oGONE", wechat_oa_interaction_at=None)  # not a follower at the fake
    enroll(lead)
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert touch.state == "failed" and "43004" in touch.error
    assert OutboxMessage.objects.filter(type="touch.failed", lead_id=lead.pk).exists()


def test_a_window_closed_at_wechat_meanwhile_is_a_policy_skip(fake_oa, settings):
    settings.WECHAT_OA_MODE = "custom"
    lead = follower(fake_oa, interaction_at=T0 - timedelta(hours=1))
    enroll(lead)
    fake_oa.fail("message/custom/send", 45015)  # our copy of the window is behind WeChat's
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert (touch.state, touch.skip_reason) == ("skipped", "policy:outside_48h")
    assert len(fake_oa.calls("message/custom/send")) == 1


def test_dispatch_twice_sends_once(fake_oa):
    lead = follower(fake_oa)
    enroll(lead)
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert touch.state == "sent"
    touches_dispatch(touch_ids=[touch.pk], now=T0)
    assert len(fake_oa.calls("message/template/send")) == 1
