"""Tencent Cloud SendSms against a fake over real HTTP: the fake verifies the TC3-HMAC-SHA256
Authorization header from the headers it received (as the real API does) and the request body
(PhoneNumberSet with +86, SmsSdkAppId, TemplateParamSet, SessionContext = the touch's key); real Ok /
LimitExceeded / IncorrectPhoneNumber / FailedOperation / AuthFailure bodies, through the dispatcher."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from channels.adapters.base import OutgoingMessage, PermanentError, RetryableError
from channels.adapters.sms_tencent import TencentSmsAdapter
from channels.registry import adapter_for, adapters_reset
from nurture.models import OutboxMessage
from sequences.dispatch import steps_advance, touches_dispatch, touches_reconcile
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory
from tests.fakeserver import FakeProvider, Request

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 20, tzinfo=SH)
SECRET_ID, SECRET_KEY, APP_ID = (
    "AKIDz8krbsJ5yKBZQpn74WFkmLPx3test",
    "Gu5t9xGARNpq86cd98joQYCN3test",
    "1400787878",
)
pytestmark = pytest.mark.django_db

OK, DAILY, WRONG, BLACKLISTED = "13900000001", "13900000002", "13900000003", "13900000004"
AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/sms/tc3_request, "
    r"SignedHeaders=([a-z;-]+), Signature=([0-9a-f]{64})$"
)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signature_ok(request: Request, secret_key: str) -> bool:
    """Tencent's check, from the received request: its signed headers, body hash, date and timestamp."""
    match = AUTH.match(request.headers.get("authorization", ""))
    if not match:
        return False
    secret_id, date, signed, signature = match.groups()
    timestamp = request.headers["x-tc-timestamp"]
    if secret_id != SECRET_ID or datetime.fromtimestamp(int(timestamp), tz=UTC).strftime("%Y-%m-%d") != date:
        return False
    names = signed.split(";")
    if "host" not in names or "content-type" not in names:
        return False
    values = {name: request.headers[name].strip() for name in names}
    if "x-tc-action" in values:
        values["x-tc-action"] = values["x-tc-action"].lower()
    headers = "".join(f"{name}:{values[name]}\n" for name in names)
    canonical = f"POST\n/\n\n{headers}\n{signed}\n{hashlib.sha256(request.body).hexdigest()}"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/sms/tc3_request\n{digest}"
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), "sms"), "tc3_request")
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature)


class FakeTencent:
    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.secret_key = SECRET_KEY
        self.reports: list[dict] = []  # delivery reports of the accepted sends
        provider.route("POST", "/", self.send_sms)

    def pull_status(self, body: dict) -> tuple:
        assert body["SmsSdkAppId"] == APP_ID and body["Limit"] <= 100 and body["BeginTime"] < body["EndTime"]
        rows = [r for r in self.reports if r["PhoneNumber"] == body["PhoneNumber"]]
        return 200, {"Response": {"PullSmsSendStatusSet": rows, "RequestId": "b5d1c2e0-pull"}}

    def calls(self) -> list[Request]:
        return self.provider.calls("/")

    def send_sms(self, request: Request) -> tuple:
        request_id = "a0aabda6-cf91-4f3e-a81f-9198114a2279"
        if not signature_ok(request, self.secret_key):
            error = {
                "Code": "AuthFailure.SignatureFailure",
                "Message": "The provided credentials could not be validated.",
            }
            return 200, {"Response": {"Error": error, "RequestId": request_id}}
        if request.headers["x-tc-action"] == "PullSmsSendStatusByPhoneNumber":
            return self.pull_status(request.json)
        assert request.headers["x-tc-action"] == "SendSms" and request.headers["x-tc-version"] == "2021-01-11"
        assert request.headers["x-tc-region"] == "ap-guangzhou"
        body = request.json
        assert (
            body["SmsSdkAppId"] == APP_ID
            and body["SignName"] == "孵化科技"
            and body["TemplateId"] == "1234567"
        )
        (number,) = body["PhoneNumberSet"]
        status = {
            "SerialNo": "",
            "PhoneNumber": number,
            "Fee": 0,
            "SessionContext": body.get("SessionContext", ""),
            "IsoCode": "CN",
        }
        if number == f"+86{DAILY}":
            status |= {
                "Code": "LimitExceeded.PhoneNumberDailyLimit",
                "Message": "the number of sms messages sent from a single mobile number every day exceeds "
                "the upper limit",
            }
        elif number == f"+86{WRONG}":
            status |= {
                "Code": "InvalidParameterValue.IncorrectPhoneNumber",
                "Message": "invalid mobile number",
            }
        elif number == f"+86{BLACKLISTED}":
            status |= {
                "Code": "FailedOperation.PhoneNumberInBlacklist",
                "Message": "the mobile number is in the blocklist",
            }
        else:
            status |= {
                "Code": "Ok",
                "Message": "send success",
                "Fee": 1,
                "SerialNo": f"5000:10457106691570536578494996{len(self.calls()):02d}",
            }
        if status["Code"] == "Ok":
            self.reports.append(
                {
                    "UserReceiveTime": int(datetime.now(UTC).timestamp()),
                    "CountryCode": "86",
                    "SubscriberNumber": number[3:],
                    "PhoneNumber": number,
                    "SerialNo": status["SerialNo"],
                    "ReportStatus": "SUCCESS",
                    "Description": "DELIVRD",
                    "SessionContext": status["SessionContext"],
                }
            )
        return 200, {"Response": {"SendStatusSet": [status], "RequestId": request_id}}


@pytest.fixture
def fake_tencent(settings) -> Iterator[FakeTencent]:
    with FakeProvider() as provider:
        fake = FakeTencent(provider)
        settings.SMS_PROVIDER = "tencent"
        settings.SMS_TENCENT_ENDPOINT = provider.url
        settings.SMS_ACCESS_KEY_ID, settings.SMS_ACCESS_KEY_SECRET = SECRET_ID, SECRET_KEY
        settings.SMS_TENCENT_SDK_APP_ID = APP_ID
        settings.SMS_SIGN_NAME, settings.SMS_TEMPLATE_CODE = "孵化科技", "1234567"
        adapters_reset()
        yield fake
        adapters_reset()


def dispatched(lead) -> Touch:
    seq = sequence_save(
        data={"name": "腾讯短信", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "sms", "text": "{{ lead.name }}，会议明天开始"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    steps_advance(now=T0)
    touch = Touch.objects.get(lead=lead)
    with time_machine.travel(T0, tick=False):
        touches_dispatch(touch_ids=[touch.pk], now=T0)
    touch.refresh_from_db()
    return touch


def test_a_signed_send_is_accepted_with_its_session_context(fake_tencent):
    lead = LeadFactory(name="李娜", phone=f"+86{OK}")
    touch = dispatched(lead)
    assert touch.state == "sent", touch.error
    (call,) = fake_tencent.calls()
    body = call.json
    assert body["PhoneNumberSet"] == [f"+86{OK}"]
    assert body["SessionContext"] == touch.idempotency_key
    assert body["TemplateParamSet"] == ["李娜，会议明天开始 拒收请回复R"]
    assert touch.provider_ref == "5000:1045710669157053657849499601"  # the SerialNo
    assert adapter_for("sms").rate_key() == f"sms:tencent:{SECRET_ID}"


def test_the_daily_limit_retries_after_beijing_midnight(fake_tencent):
    touch = dispatched(LeadFactory(phone=f"+86{DAILY}"))
    assert touch.state == "scheduled"
    assert touch.due_at == datetime(2027, 3, 2, 0, 0, tzinfo=SH)
    assert "LimitExceeded.PhoneNumberDailyLimit" in touch.error


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (WRONG, "InvalidParameterValue.IncorrectPhoneNumber"),
        (BLACKLISTED, "FailedOperation.PhoneNumberInBlacklist"),
    ],
)
def test_a_refused_number_fails_at_once(fake_tencent, number, code):
    lead = LeadFactory(phone=f"+86{number}")
    touch = dispatched(lead)
    assert (touch.state, touch.attempts) == ("failed", 1)
    assert code in touch.error
    assert OutboxMessage.objects.filter(type="touch.failed", lead_id=lead.pk).count() == 1
    assert len(fake_tencent.calls()) == 1


def test_a_bad_signature_is_refused_permanently(fake_tencent):
    fake_tencent.secret_key = "not-our-key"
    message = OutgoingMessage(
        touch_id=1, idempotency_key="e1-p0", channel="sms", lead_id=1, lead={"phone": f"+86{OK}"}, text="你好"
    )
    with pytest.raises(PermanentError) as caught:
        TencentSmsAdapter().send(message)
    assert caught.value.code == "AuthFailure.SignatureFailure"


def test_request_limits_and_internal_errors_retry(fake_tencent):
    message = OutgoingMessage(
        touch_id=1, idempotency_key="e1-p0", channel="sms", lead_id=1, lead={"phone": f"+86{OK}"}, text="你好"
    )
    for code in ("RequestLimitExceeded", "InternalError.Timeout"):
        error = {"Code": code, "Message": "busy"}
        fake_tencent.provider.route(
            "POST", "/", lambda r, e=error: (200, {"Response": {"Error": e, "RequestId": "x"}})
        )
        with pytest.raises(RetryableError):
            TencentSmsAdapter().send(message)


@pytest.mark.parametrize("accepted", [True, False])
def test_a_send_a_dead_worker_left_unrecorded_is_found_in_the_reports(fake_tencent, accepted):
    lead = LeadFactory(phone=f"+86{OK}")
    seq = sequence_save(
        data={"name": "腾讯短信", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "sms", "text": "你好"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    steps_advance(now=T0)
    touch = Touch.objects.get(lead=lead)
    Touch.objects.filter(pk=touch.pk).update(state="sending", claimed_at=T0, attempts=1)  # the worker died…
    if accepted:  # … after Tencent took the message
        message = OutgoingMessage(
            touch_id=touch.pk,
            idempotency_key=touch.idempotency_key,
            channel="sms",
            lead_id=lead.pk,
            lead={"phone": lead.phone},
            text="你好",
        )
        with time_machine.travel(T0, tick=False):
            TencentSmsAdapter().send(message)
    later = T0 + timedelta(minutes=15)
    with time_machine.travel(later, tick=False):
        counts = touches_reconcile(now=later)
    touch.refresh_from_db()
    if accepted:
        assert counts["reconciled"] == 1 and touch.state == "delivered"
        assert len([c for c in fake_tencent.calls() if c.headers["x-tc-action"] == "SendSms"]) == 1
    else:
        assert counts["requeued"] == 1 and touch.state == "scheduled"
