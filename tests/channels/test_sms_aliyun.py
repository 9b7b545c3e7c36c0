"""Aliyun SendSms against a fake dysmsapi over real HTTP: the fake recomputes the v1 signature with the
secret and checks the parameters (OutId = the touch's key, the number without +86, the text with the
opt-out words in the template variable); real OK / isv.BUSINESS_LIMIT_CONTROL / isv.MOBILE_NUMBER_ILLEGAL
bodies, end to end through the dispatcher."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

import pytest
import time_machine

from channels.adapters.base import OutgoingMessage, PermanentError, RetryableError
from channels.adapters.sms_aliyun import AliyunSmsAdapter
from channels.registry import adapter_for, adapters_reset
from nurture.models import OutboxMessage
from sequences.dispatch import steps_advance, touches_dispatch, touches_reconcile
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory
from tests.fakeserver import FakeProvider, Request

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 20, tzinfo=SH)
KEY_ID, SECRET = "LTAI5tTestKeyId", "testsecretAliyun0123456789"
pytestmark = pytest.mark.django_db

OK_NUMBER, LIMITED_HOUR, LIMITED_DAY, ILLEGAL = "13800000001", "13800000002", "13800000003", "13800000004"


def _encode(value: str) -> str:
    # As Aliyun's documentation spells it (Java's URLEncoder, then the three fixes): not the adapter's code.
    return quote_plus(value, encoding="utf-8").replace("+", "%20").replace("*", "%2A").replace("%7E", "~")


def expected_signature(params: dict[str, str], secret: str) -> str:
    query = "&".join(f"{_encode(k)}={_encode(params[k])}" for k in sorted(params) if k != "Signature")
    to_sign = "POST&%2F&" + _encode(query)
    return base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


class FakeAliyun:
    """dysmsapi's SendSms: 400 SignatureDoesNotMatch unless the signature is right; else by number."""

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.secret = SECRET
        self.sent: list[dict] = []  # what QuerySendDetails answers from
        provider.route("POST", "/", self.send_sms)

    @property
    def url(self) -> str:
        return self.provider.url

    def calls(self) -> list[Request]:
        return self.provider.calls("/")

    def send_sms(self, request: Request) -> tuple:
        params = request.form
        if params.get("Signature") != expected_signature(params, self.secret):
            return 400, {
                "RequestId": "2E9B0D67-1B89-5D4B-8C7B-7E4D8E5A1F00",
                "HostId": "dysmsapi.aliyuncs.com",
                "Code": "SignatureDoesNotMatch",
                "Message": "Specified signature is not matched with our calculation.",
            }
        assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
        if params["Action"] == "QuerySendDetails":
            return self.query_send_details(params)
        assert params["Action"] == "SendSms" and params["Version"] == "2017-05-25"
        assert params["SignatureMethod"] == "HMAC-SHA1" and params["SignatureVersion"] == "1.0"
        assert params["AccessKeyId"] == KEY_ID and params["Format"] == "JSON"
        assert datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        assert len(params["SignatureNonce"]) >= 16
        assert params["SignName"] == "孵化科技" and params["TemplateCode"] == "SMS_123456789"
        assert params["OutId"].startswith("e")
        assert "content" in json.loads(params["TemplateParam"])  # the rendered text's variable
        number = params["PhoneNumbers"]
        request_id = "F655A8D5-B967-440B-8683-DAD6FF8DE990"
        if number == LIMITED_HOUR:
            return 200, {"Message": "触发小时级流控Permits:5", "RequestId": request_id, "Code": LIMIT}
        if number == LIMITED_DAY:
            return 200, {"Message": "触发天级流控Permits:10", "RequestId": request_id, "Code": LIMIT}
        if number == ILLEGAL:
            return 200, {
                "Message": "非法手机号",
                "RequestId": request_id,
                "Code": "isv.MOBILE_NUMBER_ILLEGAL",
            }
        biz_id = f"9006197469364984{len(self.calls()):02d}^0"
        self.sent.append(
            {
                "SendDate": datetime.now(SH).strftime("%Y-%m-%d %H:%M:%S"),
                "SendStatus": 1,
                "ReceiveDate": "",
                "ErrCode": "",
                "TemplateCode": params["TemplateCode"],
                "Content": "【孵化科技】" + json.loads(params["TemplateParam"])["content"],
                "PhoneNum": number,
                "OutId": params["OutId"],
            }
        )
        return 200, {"Message": "OK", "RequestId": request_id, "Code": "OK", "BizId": biz_id}

    def query_send_details(self, params: dict[str, str]) -> tuple:
        assert int(params["PageSize"]) <= 50 and params["CurrentPage"] == "1"
        day = datetime.strptime(params["SendDate"], "%Y%m%d").strftime("%Y-%m-%d")
        rows = [
            r for r in self.sent if r["PhoneNum"] == params["PhoneNumber"] and r["SendDate"].startswith(day)
        ]
        return 200, {
            "TotalCount": len(rows),
            "Message": "OK",
            "RequestId": "819BE656-D2E0-4858-8B21-B2E477085AAF",
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": rows},
            "Code": "OK",
        }


LIMIT = "isv.BUSINESS_LIMIT_CONTROL"


@pytest.fixture
def fake_aliyun(settings) -> Iterator[FakeAliyun]:
    with FakeProvider() as provider:
        fake = FakeAliyun(provider)
        settings.SMS_PROVIDER = "aliyun"
        settings.SMS_ALIYUN_ENDPOINT = fake.url
        settings.SMS_ACCESS_KEY_ID = KEY_ID
        settings.SMS_ACCESS_KEY_SECRET = SECRET
        settings.SMS_SIGN_NAME = "孵化科技"
        settings.SMS_TEMPLATE_CODE = "SMS_123456789"
        adapters_reset()
        yield fake
        adapters_reset()


def sms_touch(lead, text="{{ lead.name }}您好，新版白皮书已发布") -> Touch:
    seq = sequence_save(
        data={"name": "短信", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "sms", "text": text}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    steps_advance(now=T0)
    return Touch.objects.get(lead=lead)


def dispatch(touch: Touch, at: datetime = T0) -> Touch:
    with time_machine.travel(at, tick=False):
        touches_dispatch(touch_ids=[touch.pk], now=at)
    touch.refresh_from_db()
    return touch


def test_an_accepted_sms_is_sent_once_with_its_key_and_the_opt_out_words(fake_aliyun):
    lead = LeadFactory(name="王磊", phone=f"+86{OK_NUMBER}")
    touch = dispatch(sms_touch(lead))
    assert touch.state == "sent", touch.error
    (call,) = fake_aliyun.calls()
    params = call.form
    assert params["PhoneNumbers"] == OK_NUMBER  # without +86
    assert params["OutId"] == touch.idempotency_key
    assert json.loads(params["TemplateParam"]) == {"content": "王磊您好，新版白皮书已发布 拒收请回复R"}
    assert touch.provider_ref == "900619746936498401^0"  # the BizId
    dispatch(touch, T0 + timedelta(minutes=5))  # nothing due any more: nothing sent again
    assert len(fake_aliyun.calls()) == 1


def test_opt_out_words_already_in_the_text_are_not_repeated(fake_aliyun, settings):
    lead = LeadFactory(phone=f"+86{OK_NUMBER}")
    dispatch(sms_touch(lead, text="限时活动，退订回T"))
    settings.SMS_OPT_OUT_TEXT = "退订回T"
    lead2 = LeadFactory(phone="+8613800000011")
    seq = sequence_save(
        data={"name": "短信2", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "sms", "text": "限时活动，退订回T"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead2.pk], anchor_at=T0, now=T0)
    steps_advance(now=T0)
    dispatch(Touch.objects.get(lead=lead2))
    first, second = (json.loads(c.form["TemplateParam"])["content"] for c in fake_aliyun.calls())
    assert first == "限时活动，退订回T 拒收请回复R"
    assert second == "限时活动，退订回T"


@pytest.mark.parametrize(
    ("number", "next_window"),
    [
        (LIMITED_HOUR, datetime(2027, 3, 1, 11, 0, tzinfo=SH)),
        (LIMITED_DAY, datetime(2027, 3, 2, 0, 0, tzinfo=SH)),
    ],
)
def test_flow_control_retries_in_the_next_window(fake_aliyun, number, next_window):
    lead = LeadFactory(phone=f"+86{number}")
    touch = dispatch(sms_touch(lead))
    assert touch.state == "scheduled"
    assert touch.due_at == next_window
    assert LIMIT in touch.error
    assert not OutboxMessage.objects.filter(type="touch.failed").exists()


def test_an_illegal_number_fails_the_touch_at_once_and_announces_it(fake_aliyun):
    lead = LeadFactory(phone=f"+86{ILLEGAL}")
    touch = dispatch(sms_touch(lead))
    assert (touch.state, touch.attempts) == ("failed", 1)
    assert "isv.MOBILE_NUMBER_ILLEGAL" in touch.error
    message = OutboxMessage.objects.get(type="touch.failed")
    assert message.lead_id == lead.pk and message.data["channel"] == "sms"
    assert len(fake_aliyun.calls()) == 1


@pytest.mark.parametrize("phone", [None, "+85291234567"])
def test_a_lead_without_a_mainland_mobile_is_refused_before_any_call(fake_aliyun, phone):
    lead = LeadFactory(phone=phone)
    touch = dispatch(sms_touch(lead))
    assert (touch.state, touch.skip_reason) == ("skipped", "policy:no_phone")
    assert fake_aliyun.calls() == []


def test_a_wrong_secret_is_refused_by_the_provider_and_is_permanent(fake_aliyun):
    fake_aliyun.secret = "another-secret"  # the fake now computes a signature we cannot match
    lead = LeadFactory(phone=f"+86{OK_NUMBER}")
    message = OutgoingMessage(
        touch_id=1,
        idempotency_key="e1-p0",
        channel="sms",
        lead_id=lead.pk,
        lead={"phone": lead.phone},
        text="你好",
    )
    with pytest.raises(PermanentError) as caught:
        AliyunSmsAdapter().send(message)
    assert caught.value.code == "SignatureDoesNotMatch"


def test_server_errors_and_a_dead_server_are_retryable(fake_aliyun, settings):
    fake_aliyun.provider.route("POST", "/", lambda r: (503, "Service Unavailable"))
    message = OutgoingMessage(
        touch_id=1,
        idempotency_key="e1-p0",
        channel="sms",
        lead_id=1,
        lead={"phone": "+8613800000001"},
        text="你好",
    )
    with pytest.raises(RetryableError):
        AliyunSmsAdapter().send(message)
    settings.SMS_ALIYUN_ENDPOINT = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(RetryableError):
        AliyunSmsAdapter().send(message)


def test_the_channel_is_not_configured_without_credentials(settings):
    settings.SMS_PROVIDER = "aliyun"
    settings.SMS_ACCESS_KEY_ID = ""
    adapters_reset()
    assert adapter_for("sms") is None
    settings.SMS_ACCESS_KEY_ID, settings.SMS_ACCESS_KEY_SECRET = KEY_ID, SECRET
    settings.SMS_SIGN_NAME, settings.SMS_TEMPLATE_CODE = "孵化科技", "SMS_1"
    adapters_reset()
    adapter = adapter_for("sms")
    assert adapter is not None and adapter.rate_key() == f"sms:aliyun:{KEY_ID}"
    adapters_reset()


def crashed_after_send(touch: Touch, lead, *, provider_accepted: bool) -> None:
    """A worker claimed the touch, (maybe) got it accepted by Aliyun, and died before recording it."""
    Touch.objects.filter(pk=touch.pk).update(state="sending", claimed_at=T0, attempts=1)
    if provider_accepted:
        message = OutgoingMessage(
            touch_id=touch.pk,
            idempotency_key=touch.idempotency_key,
            channel="sms",
            lead_id=lead.pk,
            lead={"phone": lead.phone},
            text="您好",
        )
        with time_machine.travel(T0, tick=False):
            AliyunSmsAdapter().send(message)


@pytest.mark.parametrize("accepted", [True, False])
def test_a_send_a_dead_worker_left_unrecorded_is_found_not_sent_twice(fake_aliyun, accepted):
    lead = LeadFactory(phone=f"+86{OK_NUMBER}")
    touch = sms_touch(lead)
    crashed_after_send(touch, lead, provider_accepted=accepted)
    later = T0 + timedelta(minutes=15)
    with time_machine.travel(later, tick=False):
        counts = touches_reconcile(now=later)
    touch.refresh_from_db()
    if accepted:
        assert counts["reconciled"] == 1 and touch.state == "sent"
    else:  # Aliyun never got it: sent again, once
        assert counts["requeued"] == 1 and touch.state == "scheduled"
        dispatch(touch, later)
        assert touch.state == "sent"
    sends = [c for c in fake_aliyun.calls() if c.form["Action"] == "SendSms"]
    assert [c.form["OutId"] for c in sends] == [touch.idempotency_key]
