"""The WeCom callback (CONTRACT §4) over real HTTP: payloads encrypted by wechatpy's WeChatCrypto, as
WeCom does, posted to the live server; URL verification, forged signatures, another corp, replays."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import xmltodict
from wechatpy.enterprise.crypto import WeChatCrypto

from channels.models import ContactWay, InboundPayload
from leads.models import Event, Lead
from leads.services import lead_upsert

TOKEN = "nurtureCallbackToken"
AES_KEY = base64.b64encode(b"nurture-wecom-callback-aes-key!!").decode().rstrip("=")  # 43 characters
CREATED = datetime(2026, 11, 30, 8, 15, 0, tzinfo=UTC)
PATH = "/channels/wecom/callback/"


# --- helpers shared by the WeCom inbound tests -------------------------------------------------


@pytest.fixture(name="eager")
def eager_fixture():
    """Celery tasks run inline (as without REDIS_URL), whatever the test environment."""
    from nurture.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture(name="wecom")
def wecom_fixture(settings, fake_wecom, eager):
    """The callback configured for the fake corp (its corp id, our token and AES key)."""
    settings.WECOM_TOKEN = TOKEN
    settings.WECOM_ENCODING_AES_KEY = AES_KEY
    return fake_wecom


def event_xml(change_type: str, *, corp_id: str, created: datetime = CREATED, **fields: str) -> str:
    """A 客户联系 event as WeCom words it (`fields`: UserID, ExternalUserID, State, WelcomeCode, …)."""
    elements = "".join(f"<{name}><![CDATA[{value}]]></{name}>" for name, value in fields.items())
    return (
        f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{int(created.timestamp())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change_type}]]></ChangeType>"
        f"{elements}</xml>"
    )


def encrypted(xml: str, *, corp_id: str, token: str = TOKEN) -> tuple[dict[str, str], bytes]:
    """The query string and body WeCom posts for `xml`, encrypted and signed by wechatpy for `corp_id`."""
    crypto = WeChatCrypto(token, AES_KEY, corp_id)
    envelope = xmltodict.parse(crypto.encrypt_message(xml, uuid.uuid4().hex[:10]))["xml"]
    params = {
        "msg_signature": envelope["MsgSignature"],
        "timestamp": envelope["TimeStamp"],
        "nonce": envelope["Nonce"],
    }
    body = (
        f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><AgentID><![CDATA[]]></AgentID>"
        f"<Encrypt><![CDATA[{envelope['Encrypt']}]]></Encrypt></xml>"
    )
    return params, body.encode()


def post(live_server, params: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(
        f"{live_server.url}{PATH}",
        params=params,
        content=body,
        headers={"Content-Type": "text/xml"},
        timeout=30,
    )


def deliver(live_server, xml: str, *, corp_id: str) -> httpx.Response:
    params, body = encrypted(xml, corp_id=corp_id)
    return post(live_server, params, body)


# --- URL verification --------------------------------------------------------------------------


def verification_params(echo: str, corp_id: str) -> dict[str, str]:
    crypto = WeChatCrypto(TOKEN, AES_KEY, corp_id)
    envelope = xmltodict.parse(crypto.encrypt_message(echo, "nonce123", "1764576000"))["xml"]
    return {
        "msg_signature": envelope["MsgSignature"],
        "timestamp": envelope["TimeStamp"],
        "nonce": envelope["Nonce"],
        "echostr": envelope["Encrypt"],
    }


@pytest.mark.django_db(transaction=True)
def test_url_verification_echoes_the_decrypted_echostr(live_server, wecom):
    answer = httpx.get(f"{live_server.url}{PATH}", params=verification_params("8732486147562", wecom.corp_id))
    assert answer.status_code == 200
    assert answer.text == "8732486147562"
    assert answer.headers["content-type"].startswith("text/plain")


@pytest.mark.django_db
def test_url_verification_touches_no_database(client, wecom, django_assert_num_queries):
    params = verification_params("4711", wecom.corp_id)
    with django_assert_num_queries(0):
        answer = client.get(PATH, params)
    assert answer.content == b"4711"


@pytest.mark.django_db(transaction=True)
def test_url_verification_with_a_bad_signature_or_another_corp_is_refused(live_server, wecom):
    params = verification_params("4711", wecom.corp_id)
    forged = {**params, "msg_signature": "0" * 40}
    assert httpx.get(f"{live_server.url}{PATH}", params=forged).status_code == 403
    other = verification_params("4711", "wwanothercorp0002")
    assert httpx.get(f"{live_server.url}{PATH}", params=other).status_code == 403


# --- Events ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_add_creates_the_lead_with_its_channel_and_sends_the_welcome(live_server, wecom):
    ContactWay.objects.create(
        name="官网活码", state="web-home", source="官网活码", user_ids=["zhangsan"], tags=["channel:官网"]
    )
    wecom.befriend("zhangsan", "wmCustomer001")
    wecom.contacts["wmCustomer001"].update(name="李雷", corp_name="韩梅梅科技", unionid="oUnion001")
    code = wecom.issue_welcome_code()
    xml = event_xml(
        "add_external_contact",
        corp_id=wecom.corp_id,
        UserID="zhangsan",
        ExternalUserID="wmCustomer001",
        State="web-home",
        WelcomeCode=code,
    )

    answer = deliver(live_server, xml, corp_id=wecom.corp_id)

    assert answer.status_code == 200 and answer.text == "success"
    lead = Lead.objects.get(wecom_external_userid="wmCustomer001")
    assert lead.wecom_follow_user == "zhangsan"
    assert lead.source == "官网活码"
    assert lead.properties["wecom_state"] == "web-home"
    assert (lead.name, lead.company, lead.wechat_unionid) == ("李雷", "韩梅梅科技", "oUnion001")
    assert list(lead.lead_tags.values_list("tag__name", flat=True)) == ["channel:官网"]
    added = Event.objects.get(lead=lead, type="wecom_added")
    assert added.occurred_at == CREATED
    assert added.properties["state"] == "web-home" and added.properties["user_id"] == "zhangsan"
    sent = wecom.calls("externalcontact/send_welcome_msg")
    assert len(sent) == 1
    assert sent[0].json["welcome_code"] == code
    assert "李雷" in sent[0].json["text"]["content"]
    assert wecom.welcome_codes[code] == "used"
    payload = InboundPayload.objects.get()
    assert payload.source == "wecom" and payload.kind == "add_external_contact"
    assert payload.processed_at is not None and payload.body["ExternalUserID"] == "wmCustomer001"


@pytest.mark.django_db(transaction=True)
def test_an_add_links_the_existing_lead_and_keeps_its_source(live_server, wecom):
    lead = lead_upsert(
        data={"phone": "+8613800000001", "wecom_external_userid": "wmKnown", "source": "展会"}
    ).lead
    xml = event_xml(
        "add_external_contact",
        corp_id=wecom.corp_id,
        UserID="lisi",
        ExternalUserID="wmKnown",
        State="expo-qr",
    )
    assert deliver(live_server, xml, corp_id=wecom.corp_id).status_code == 200
    lead.refresh_from_db()
    assert Lead.objects.count() == 1
    assert lead.source == "展会"  # the first channel stays; the state is kept beside it
    assert lead.properties["wecom_state"] == "expo-qr"
    assert lead.wecom_follow_user == "lisi"
    assert Event.objects.filter(lead=lead, type="wecom_added").count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_unknown_state_becomes_the_source_as_it_is(live_server, wecom):
    xml = event_xml(
        "add_external_contact",
        corp_id=wecom.corp_id,
        UserID="lisi",
        ExternalUserID="wmNew",
        State="poster-11",
    )
    deliver(live_server, xml, corp_id=wecom.corp_id)
    assert Lead.objects.get(wecom_external_userid="wmNew").source == "poster-11"


@pytest.mark.django_db(transaction=True)
def test_a_forged_signature_is_refused_and_nothing_is_stored(live_server, wecom):
    xml = event_xml(
        "add_external_contact", corp_id=wecom.corp_id, UserID="zhangsan", ExternalUserID="wmForged"
    )
    params, body = encrypted(xml, corp_id=wecom.corp_id, token="notOurToken")
    assert post(live_server, params, body).status_code == 403
    good_params, good_body = encrypted(xml, corp_id=wecom.corp_id)
    tampered = {**good_params, "timestamp": str(int(good_params["timestamp"]) + 1)}
    assert post(live_server, tampered, good_body).status_code == 403
    assert post(live_server, {**good_params, "msg_signature": ""}, good_body).status_code == 403
    assert not InboundPayload.objects.exists()
    assert not Lead.objects.exists()
    assert not wecom.calls("externalcontact/get")


@pytest.mark.django_db(transaction=True)
def test_a_payload_for_another_corp_is_refused(live_server, wecom):
    xml = event_xml("add_external_contact", corp_id="wwanothercorp0002", UserID="u", ExternalUserID="wmOther")
    assert deliver(live_server, xml, corp_id="wwanothercorp0002").status_code == 403
    assert not InboundPayload.objects.exists()
    assert not Lead.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_replay_changes_nothing(live_server, wecom):
    code = wecom.issue_welcome_code()
    xml = event_xml(
        "add_external_contact",
        corp_id=wecom.corp_id,
        UserID="zhangsan",
        ExternalUserID="wmReplay",
        WelcomeCode=code,
    )
    params, body = encrypted(xml, corp_id=wecom.corp_id)
    assert post(live_server, params, body).text == "success"
    lead = Lead.objects.get()
    updated_at = lead.updated_at

    assert post(live_server, params, body).text == "success"  # the very same request again
    assert deliver(live_server, xml, corp_id=wecom.corp_id).text == "success"  # WeCom's retry, new nonce

    assert InboundPayload.objects.count() == 1
    assert Event.objects.filter(type="wecom_added").count() == 1
    assert Lead.objects.get().updated_at == updated_at
    assert len(wecom.calls("externalcontact/send_welcome_msg")) == 1


@pytest.mark.django_db(transaction=True)
def test_bad_input_gets_400_never_500(live_server, wecom):
    assert post(live_server, {}, b"not xml").status_code == 400
    assert post(live_server, {}, b"<xml><Nothing/></xml>").status_code == 400
    params, _ = encrypted("<xml/>", corp_id=wecom.corp_id)
    assert httpx.put(f"{live_server.url}{PATH}", params=params).status_code == 405
    assert not InboundPayload.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_without_the_settings_the_callback_says_not_configured(live_server, settings):
    settings.WECOM_TOKEN = ""
    answer = httpx.get(f"{live_server.url}{PATH}", params={"echostr": "x"})
    assert answer.status_code == 503
    assert not InboundPayload.objects.exists()
