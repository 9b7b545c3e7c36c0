"""The official account's callback: URL verification, plaintext and safe mode (encrypted with wechatpy,
as WeChat does), forged signatures and other accounts refused with nothing stored, replays changing
nothing, and what subscribe / unsubscribe / TEMPLATESENDJOBFINISH / messages / clicks do."""

import hashlib
import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
import xmltodict
from django.core.management import call_command
from wechatpy.crypto import WeChatCrypto

from channels.inbound import inbound_process_pending
from channels.models import InboundPayload
from leads.models import Event, Lead
from nurture.models import OutboxMessage
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.channels.fake_wechat_oa import fake_oa_running
from tests.factories import LeadFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 0, tzinfo=SH)
TOKEN = "nurtureOaToken2027"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters, as the console makes them
APP_ID = "wx5823bf96d3bd56c7"
URL = "/channels/wechat/callback/"
pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_oa(settings):
    with fake_oa_running(settings) as fake:
        yield fake


@pytest.fixture(autouse=True)
def callback_settings(settings, monkeypatch):
    settings.WECHAT_OA_TOKEN = TOKEN
    settings.WECHAT_OA_ENCODING_AES_KEY = AES_KEY
    settings.WECHAT_OA_APP_ID = APP_ID
    from nurture.celery import app

    # The on-commit task runs in this process (with REDIS_URL the app would send it to a broker).
    monkeypatch.setattr(app.conf, "task_always_eager", True)


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def xml(**fields) -> str:
    inner = "".join(
        f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()
    )
    return f"<xml>{inner}</xml>"


def epoch(at: datetime) -> int:
    return int(at.timestamp())


def post_plain(client, body: str, *, token=TOKEN, timestamp="1772330400", nonce="1320562132"):
    query = f"signature={signature(token, timestamp, nonce)}&timestamp={timestamp}&nonce={nonce}&openid=x"
    return client.post(f"{URL}?{query}", data=body, content_type="text/xml")


def post_aes(client, body: str, *, app_id=APP_ID, forge=False, timestamp="1772330400", nonce="873465"):
    envelope = WeChatCrypto(TOKEN, AES_KEY, app_id).encrypt_message(body, nonce, timestamp)
    parsed = xmltodict.parse(envelope)["xml"]
    msg_signature = parsed["MsgSignature"]
    if forge:
        msg_signature = signature("not-the-token", timestamp, nonce, parsed["Encrypt"])
    outer = xml(ToUserName="gh_3e8adccde292", Encrypt=parsed["Encrypt"])
    query = (
        f"signature={signature(TOKEN, timestamp, nonce)}&timestamp={timestamp}&nonce={nonce}"
        f"&openid=x&encrypt_type=aes&msg_signature={msg_signature}"
    )
    return client.post(f"{URL}?{query}", data=outer, content_type="text/xml")


def send(client, django_capture_on_commit_callbacks, body: str, *, aes=True, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        response = (post_aes if aes else post_plain)(client, body, **kwargs)
    return response


def subscribe(openid="oUSER1", at=T0, key=""):
    return xml(
        ToUserName="gh_3e8adccde292",
        FromUserName=openid,
        CreateTime=epoch(at),
        MsgType="event",
        Event="subscribe",
        EventKey=key,
    )


def text(openid="oUSER1", at=T0, content="请问价格多少？", msgid=23456789012345678):
    return xml(
        ToUserName="gh_3e8adccde292",
        FromUserName=openid,
        CreateTime=epoch(at),
        MsgType="text",
        Content=content,
        MsgId=msgid,
    )


# --- URL verification and signatures.


def test_get_verification_echoes_echostr_only_when_signed(client):
    ts, nonce = "1772330400", "123456"
    good = client.get(
        URL, {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": "e42"}
    )
    assert (good.status_code, good.content) == (200, b"e42")
    bad = client.get(URL, {"signature": "0" * 40, "timestamp": ts, "nonce": nonce, "echostr": "e42"})
    assert bad.status_code == 403 and b"e42" not in bad.content


@pytest.mark.parametrize("mode", ["aes_forged", "aes_other_account", "plain_forged"])
def test_a_forged_or_foreign_callback_is_refused_and_nothing_is_stored(
    client, django_capture_on_commit_callbacks, mode
):
    if mode == "aes_forged":
        response = send(client, django_capture_on_commit_callbacks, subscribe(), forge=True)
    elif mode == "aes_other_account":
        response = send(client, django_capture_on_commit_callbacks, subscribe(), app_id="wxANOTHERACCOUNT01")
    else:
        response = send(client, django_capture_on_commit_callbacks, subscribe(), aes=False, token="wrong")
    assert response.status_code == 403
    assert not InboundPayload.objects.exists()
    assert not Lead.objects.exists()
    assert not Event.objects.exists()


def test_without_a_token_the_endpoint_says_it_is_not_configured(client, settings):
    settings.WECHAT_OA_TOKEN = ""
    assert client.get(URL).status_code == 503


def test_garbage_is_a_bad_request(client):
    assert post_plain(client, "not xml at all").status_code == 400


# --- Events.


def test_subscribe_through_a_parametric_qr_code_creates_the_lead_with_its_source(
    client, django_capture_on_commit_callbacks
):
    response = send(client, django_capture_on_commit_callbacks, subscribe(key="qrscene_expo2027"))
    assert (response.status_code, response.content) == (200, b"success")
    lead = Lead.objects.get(wechat_openid="oUSER1")
    assert lead.source == "expo2027"
    assert lead.wechat_oa_interaction_at == T0
    assert lead.last_inbound_at == T0  # following the account is a sign of life: silence restarts
    event = Event.objects.get(lead=lead)
    assert (event.type, event.occurred_at, event.source) == ("wechat_subscribed", T0, "wechat_oa")
    assert event.properties == {"channel": "wechat_oa", "scene": "expo2027"}
    payload = InboundPayload.objects.get()
    assert (payload.source, payload.kind, payload.processed_at is not None) == (
        "wechat_oa",
        "event:subscribe",
        True,
    )


def test_a_replayed_callback_changes_nothing(client, django_capture_on_commit_callbacks):
    send(client, django_capture_on_commit_callbacks, subscribe())
    lead = Lead.objects.get()
    before = (lead.updated_at, lead.wechat_oa_interaction_at)
    again = send(client, django_capture_on_commit_callbacks, subscribe())
    assert again.status_code == 200
    assert InboundPayload.objects.count() == 1
    assert Event.objects.count() == 1
    lead.refresh_from_db()
    assert (lead.updated_at, lead.wechat_oa_interaction_at) == before


def test_subscribe_links_a_known_lead_by_openid(client, django_capture_on_commit_callbacks):
    known = LeadFactory(wechat_openid="oUSER1", source="官网表单")
    send(client, django_capture_on_commit_callbacks, subscribe(key="qrscene_expo2027"))
    assert Lead.objects.get() == known
    known.refresh_from_db()
    assert known.source == "官网表单"  # the source it came from stays


def test_unsubscribe_opts_the_lead_out_of_the_official_account(client, django_capture_on_commit_callbacks):
    lead = LeadFactory(wechat_openid="oUSER1")
    body = xml(FromUserName="oUSER1", CreateTime=epoch(T0), MsgType="event", Event="unsubscribe", EventKey="")
    send(client, django_capture_on_commit_callbacks, body, aes=False)
    event = Event.objects.get(lead=lead)
    assert (event.type, event.properties) == ("unsubscribed", {"channel": "wechat_oa"})
    lead.refresh_from_db()
    assert not lead.do_not_contact  # one channel only


def test_a_text_message_is_message_in_and_opens_the_window(client, django_capture_on_commit_callbacks):
    lead = LeadFactory(wechat_openid="oUSER1", wechat_oa_interaction_at=T0 - timedelta(days=9))
    at = T0 + timedelta(hours=3)
    send(client, django_capture_on_commit_callbacks, text(at=at))
    event = Event.objects.get(lead=lead)
    assert event.type == "message_in"
    assert event.properties == {"channel": "wechat_oa", "text": "请问价格多少？", "msgtype": "text"}
    lead.refresh_from_db()
    assert lead.wechat_oa_interaction_at == at
    assert lead.last_inbound_at == at
    # An older message delivered late moves nothing back.
    send(client, django_capture_on_commit_callbacks, text(at=T0, msgid=1, content="早先的消息"))
    lead.refresh_from_db()
    assert (lead.wechat_oa_interaction_at, lead.last_inbound_at) == (at, at)
    assert Event.objects.filter(type="message_in").count() == 2


def test_a_voice_message_carries_its_recognition_as_text(client, django_capture_on_commit_callbacks):
    body = xml(
        FromUserName="oUSER2",
        CreateTime=epoch(T0),
        MsgType="voice",
        MediaId="m1",
        Format="amr",
        Recognition="我想了解报价",
        MsgId=777,
    )
    send(client, django_capture_on_commit_callbacks, body)
    event = Event.objects.get(type="message_in")
    assert event.properties["text"] == "我想了解报价"
    assert event.lead.wechat_openid == "oUSER2"


@pytest.mark.parametrize("event", ["CLICK", "VIEW", "SCAN"])
def test_menu_clicks_and_scans_open_the_window(client, django_capture_on_commit_callbacks, event):
    lead = LeadFactory(wechat_openid="oUSER1")
    body = xml(FromUserName="oUSER1", CreateTime=epoch(T0), MsgType="event", Event=event, EventKey="MENU_1")
    send(client, django_capture_on_commit_callbacks, body)
    lead.refresh_from_db()
    assert lead.wechat_oa_interaction_at == T0
    assert not Event.objects.filter(type="message_in").exists()


def test_a_payload_whose_task_was_lost_is_processed_by_the_tick(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # the task never runs
        post_aes(client, subscribe())
    payload = InboundPayload.objects.get()
    assert payload.processed_at is None and not Lead.objects.exists()
    received = payload.received_at
    assert inbound_process_pending(received + timedelta(seconds=10)) == {}  # its task may still come
    later = received + timedelta(minutes=2)
    with time_machine.travel(later, tick=False):
        call_command("tick", "--now", later.isoformat(), stdout=io.StringIO())  # the tick's pending step
    assert InboundPayload.objects.get().processed_at == later
    assert Lead.objects.filter(wechat_openid="oUSER1").exists()
    assert inbound_process_pending(received + timedelta(minutes=3)) == {}


# --- Template receipts, on a touch really sent through the fake.


def _template_touch(fake):
    fake.follow("oUSER1")
    lead = LeadFactory(wechat_openid="oUSER1")
    seq = sequence_save(
        data={"name": "模板", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "wechat_oa", "text": "活动提醒"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    with time_machine.travel(T0, tick=False):
        call_command("tick", "--now", T0.isoformat(), stdout=io.StringIO())
    touch = Touch.objects.get(lead=lead)
    assert touch.state == "sent" and touch.provider_ref
    return touch


def finish(touch, status, at=T0 + timedelta(seconds=5)):
    return xml(
        FromUserName=touch.lead.wechat_openid,
        CreateTime=epoch(at),
        MsgType="event",
        Event="TEMPLATESENDJOBFINISH",
        MsgID=int(touch.provider_ref),
        Status=status,
    )


def test_template_send_job_finished_marks_the_touch_delivered(
    client, django_capture_on_commit_callbacks, fake_oa, settings
):
    settings.WECHAT_OA_APP_ID = fake_oa.app_id
    touch = _template_touch(fake_oa)
    send(client, django_capture_on_commit_callbacks, finish(touch, "success"), aes=False)
    touch.refresh_from_db()
    assert touch.state == "delivered"
    send(client, django_capture_on_commit_callbacks, finish(touch, "success"), aes=False)  # replay
    assert InboundPayload.objects.count() == 1


@pytest.mark.parametrize("status", ["failed:user block", "failed: system failed"])
def test_template_send_job_failed_fails_the_touch(
    client, django_capture_on_commit_callbacks, fake_oa, settings, status
):
    settings.WECHAT_OA_APP_ID = fake_oa.app_id
    touch = _template_touch(fake_oa)
    send(client, django_capture_on_commit_callbacks, finish(touch, status), aes=False)
    touch.refresh_from_db()
    assert touch.state == "failed" and status in touch.error
    message = OutboxMessage.objects.get(type="touch.failed")
    assert message.data["touch"] == touch.pk


def test_a_receipt_for_a_msgid_we_do_not_know_changes_nothing(client, django_capture_on_commit_callbacks):
    lead = LeadFactory(wechat_openid="oUSER1")
    body = xml(
        FromUserName="oUSER1",
        CreateTime=epoch(T0),
        MsgType="event",
        Event="TEMPLATESENDJOBFINISH",
        MsgID=99,
        Status="success",
    )
    assert send(client, django_capture_on_commit_callbacks, body, aes=False).status_code == 200
    assert InboundPayload.objects.get().processed_at is not None
    assert not Event.objects.filter(lead=lead).exists()
