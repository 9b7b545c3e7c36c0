"""SMS delivery receipts and replies as the providers push them: Aliyun SmsReport / SmsUp and Tencent's
status and reply callbacks move the touches they name, record replies, and an opt-out reply stops the
lead's next SMS; a replay changes nothing; without the URL's secret: 403 and nothing stored."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import time_machine

from channels.models import InboundPayload
from leads.models import Event, Lead
from nurture.models import OutboxMessage
from sequences.dispatch import steps_advance
from sequences.models import Touch
from sequences.receipts import DeliveryReceipt, touch_delivery_record, touches_delivery_record
from sequences.services import sequence_enroll, sequence_save
from tests.channels import test_sms_aliyun, test_sms_tencent
from tests.channels.test_sms_aliyun import OK_NUMBER, SH, T0, dispatch, sms_touch
from tests.channels.test_sms_tencent import dispatched as tencent_dispatched
from tests.factories import LeadFactory

# The fake providers' fixtures, to send the touches the receipts name.
fake_aliyun = test_sms_aliyun.fake_aliyun
fake_tencent = test_sms_tencent.fake_tencent

pytestmark = pytest.mark.django_db
TOKEN = "receipt-secret-9f8e7d"


@pytest.fixture(autouse=True)
def _token(settings):
    settings.SMS_RECEIPT_TOKEN = TOKEN


def push(client, path: str, body, token: str | None = TOKEN, at: datetime = T0 + timedelta(minutes=10)):
    """POST as the provider does, at `at` (the pushed times are before it)."""
    url = f"/channels/sms/{path}/" + (f"?token={token}" if token is not None else "")
    with time_machine.travel(at, tick=False):
        return client.post(url, data=json.dumps(body, ensure_ascii=False), content_type="application/json")


def aliyun_report(touch: Touch, *, success: bool, err_code: str = "DELIVERED") -> list[dict]:
    return [
        {
            "phone_number": OK_NUMBER,
            "send_time": "2027-03-01 10:20:01",
            "report_time": "2027-03-01 10:20:09",
            "success": success,
            "err_code": err_code,
            "err_msg": "用户接收成功" if success else "空号",
            "sms_size": "1",
            "biz_id": touch.provider_ref,
            "out_id": touch.idempotency_key,
        }
    ]


@pytest.fixture
def sent(fake_aliyun) -> Touch:
    touch = dispatch(sms_touch(LeadFactory(phone=f"+86{OK_NUMBER}")))
    assert touch.state == "sent", touch.error
    return touch


def test_a_delivered_report_marks_the_touch_delivered_and_a_replay_changes_nothing(client, sent):
    response = push(client, "aliyun/report", aliyun_report(sent, success=True))
    assert response.status_code == 200
    assert response.json() == {"code": 0, "msg": "成功"}
    sent.refresh_from_db()
    assert sent.state == "delivered"
    again = push(client, "aliyun/report", aliyun_report(sent, success=True))
    assert again.json() == {"code": 0, "msg": "成功"}
    assert InboundPayload.objects.filter(source="sms_aliyun", kind="report").count() == 1
    assert InboundPayload.objects.get().processed_at is not None


def test_a_failed_report_fails_the_touch_once_with_touch_failed(client, sent):
    body = aliyun_report(sent, success=False, err_code="MK:0001")
    push(client, "aliyun/report", body)
    push(client, "aliyun/report", body)
    sent.refresh_from_db()
    assert sent.state == "failed"
    assert "MK:0001" in sent.error
    (message,) = OutboxMessage.objects.filter(type="touch.failed")
    assert message.lead_id == sent.lead_id
    assert message.data["touch"] == sent.pk and message.data["channel"] == "sms"


def test_a_report_found_by_biz_id_alone(client, sent):
    body = aliyun_report(sent, success=True)
    body[0]["out_id"] = ""
    push(client, "aliyun/report", body)
    sent.refresh_from_db()
    assert sent.state == "delivered"


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_without_the_secret_nothing_is_stored(client, sent, token):
    response = push(client, "aliyun/report", aliyun_report(sent, success=True), token=token)
    assert response.status_code == 403
    assert not InboundPayload.objects.exists()
    sent.refresh_from_db()
    assert sent.state == "sent"


def test_no_configured_secret_refuses_every_push(client, sent, settings):
    settings.SMS_RECEIPT_TOKEN = ""
    assert push(client, "aliyun/report", aliyun_report(sent, success=True), token="").status_code == 403
    assert not InboundPayload.objects.exists()


def test_a_body_that_is_not_a_list_of_objects_is_refused(client):
    assert push(client, "aliyun/report", "nonsense").status_code == 400
    assert push(client, "aliyun/report", [1, 2]).status_code == 400


def test_tencent_status_callback_by_serial_number(client, fake_tencent):
    delivered = tencent_dispatched(LeadFactory(phone="+8613900000001"))
    failed = tencent_dispatched(LeadFactory(phone="+8613900000009"))
    assert (delivered.state, failed.state) == ("sent", "sent")
    body = [
        {
            "user_receive_time": "2027-03-01 10:20:09",
            "nationcode": "86",
            "mobile": "13900000001",
            "report_status": "SUCCESS",
            "errmsg": "DELIVRD",
            "description": "用户短信送达成功",
            "sid": delivered.provider_ref,
        },
        {
            "user_receive_time": "2027-03-01 10:20:10",
            "nationcode": "86",
            "mobile": "13900000009",
            "report_status": "FAIL",
            "errmsg": "MN:0001",
            "description": "空号",
            "sid": failed.provider_ref,
        },
    ]
    response = push(client, "tencent/report", body)
    assert response.json() == {"result": 0, "errmsg": "OK"}
    delivered.refresh_from_db()
    failed.refresh_from_db()
    assert (delivered.state, failed.state) == ("delivered", "failed")
    assert OutboxMessage.objects.filter(type="touch.failed", lead_id=failed.lead_id).count() == 1


def second_sms_step(lead: Lead, day: int = 2):
    seq = sequence_save(
        data={"name": "短信跟进", "status": "active", "quiet_hours": None},
        steps=[{"day": day, "send_time": "10:00", "channel": "sms", "text": "跟进"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)


def test_an_opt_out_reply_stops_the_next_sms(client, sent):
    lead = sent.lead
    second_sms_step(lead)
    reply = [
        {
            "phone_number": OK_NUMBER,
            "send_time": "2027-03-01 10:25:00",
            "content": "退订",
            "sign_name": "孵化科技",
            "dest_code": "1234",
            "sequence_id": 1234567890,
        }
    ]
    response = push(client, "aliyun/reply", reply)
    assert response.json() == {"code": 0, "msg": "成功"}
    push(client, "aliyun/reply", reply)  # replayed
    events = Event.objects.filter(lead=lead).order_by("type")
    assert [(e.type, e.properties["channel"]) for e in events] == [
        ("message_in", "sms"),
        ("unsubscribed", "sms"),
    ]
    assert events[0].properties["text"] == "退订"
    assert events[0].occurred_at == datetime(2027, 3, 1, 10, 25, tzinfo=SH)
    lead.refresh_from_db()
    assert lead.last_inbound_at == datetime(2027, 3, 1, 10, 25, tzinfo=SH)
    assert not lead.do_not_contact  # the other channels stay open
    later = datetime(2027, 3, 3, 10, 0, tzinfo=SH)
    with time_machine.travel(later, tick=False):
        steps_advance(now=later)
    follow_up = Touch.objects.get(lead=lead, step__sequence__name="短信跟进")
    assert (follow_up.state, follow_up.skip_reason) == ("skipped", "opted_out:sms")


def test_an_ordinary_reply_is_a_message_only(client, sent):
    second_sms_step(sent.lead)
    reply = [
        {
            "phone_number": OK_NUMBER,
            "send_time": "2027-03-01 10:26:00",
            "content": "好的，请发资料",
            "sequence_id": 7,
        }
    ]
    push(client, "aliyun/reply", reply)
    assert list(Event.objects.filter(lead=sent.lead).values_list("type", flat=True)) == ["message_in"]
    later = datetime(2027, 3, 3, 10, 0, tzinfo=SH)
    steps_advance(now=later)
    assert Touch.objects.get(lead=sent.lead, step__sequence__name="短信跟进").state == "scheduled"


def test_tencent_reply_callback_td_opts_out(client, db):
    lead = LeadFactory(phone="+8613900000077")
    body = {
        "extend": "",
        "mobile": "13900000077",
        "nationcode": "86",
        "sign": "孵化科技",
        "text": "td",
        "time": 1803868800,
    }
    response = push(client, "tencent/reply", body)
    assert response.json() == {"result": 0, "errmsg": "OK"}
    unsub = Event.objects.get(lead=lead, type="unsubscribed")
    assert unsub.properties["channel"] == "sms"
    assert InboundPayload.objects.get().source == "sms_tencent"


def test_a_reply_from_an_unknown_number_is_stored_and_changes_no_lead(client, db):
    push(client, "aliyun/reply", [{"phone_number": "13700000000", "content": "退订", "sequence_id": 9}])
    assert InboundPayload.objects.count() == 1
    assert not Event.objects.exists() and not Lead.objects.exists()


# --- The service itself.


def test_only_a_sent_touch_moves_and_the_batch_is_bounded(sent, django_assert_max_num_queries):
    at = T0 + timedelta(minutes=1)
    others = [
        DeliveryReceipt(delivered=False, idempotency_key=f"missing-{i}", error="x") for i in range(50)
    ] + [DeliveryReceipt(delivered=True, provider_ref=f"ref-{i}") for i in range(50)]
    receipts = [*others, DeliveryReceipt(delivered=True, idempotency_key=sent.idempotency_key)]
    with django_assert_max_num_queries(8):
        assert touches_delivery_record(channel="sms", receipts=receipts, at=at) == 1
    assert (
        touch_delivery_record(channel="sms", idempotency_key=sent.idempotency_key, delivered=False, at=at)
        == 0
    )
    sent.refresh_from_db()
    assert sent.state == "delivered"  # a late failure report does not undo a delivery
    assert (
        touch_delivery_record(channel="email", idempotency_key=sent.idempotency_key, delivered=True, at=at)
        == 0
    )
    assert not OutboxMessage.objects.filter(type="touch.failed").exists()
