"""The email channel through a real local SMTP server (aiosmtpd): multipart text + HTML with the content
link, List-Unsubscribe one-click headers (RFC 8058), a Message-ID from the touch's key; SMTP refusals
(5xx permanent, 4xx retried); bounces through the webhook and django-anymail's tracking signal."""

from __future__ import annotations

import email
import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import Message
from email.policy import default as default_policy
from zoneinfo import ZoneInfo

import pytest
import time_machine
from aiosmtpd.controller import Controller

from channels.email import email_anymail_tracking, unsubscribe_token_read
from channels.models import InboundPayload
from channels.registry import adapter_for, adapters_reset
from content.models import ContentAsset
from leads.models import Event
from nurture.models import OutboxMessage
from sequences.dispatch import steps_advance, touches_dispatch
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 0, tzinfo=SH)
PUBLIC = "https://nurture.example.com"
SECRET = "bounce-secret-123"
pytestmark = pytest.mark.django_db


class Mailbox:
    """aiosmtpd handler: refuses nobody@ (550) and busy@ (450), keeps every accepted message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 <nobody@example.cn>: Recipient address rejected: User unknown"
        if address.startswith("busy@"):
            return "450 4.2.1 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"

    def parsed(self) -> list[Message]:
        return [email.message_from_bytes(raw, policy=default_policy) for _, _, raw in self.messages]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp(settings) -> Iterator[Mailbox]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS, settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = False, "", ""
    settings.EMAIL_FROM = settings.DEFAULT_FROM_EMAIL = "市场部 <marketing@nurture.example.com>"
    settings.EMAIL_SUBJECT = "来自孵化科技的资料"
    settings.NURTURE_PUBLIC_URL = PUBLIC
    settings.EMAIL_WEBHOOK_SECRET = SECRET
    adapters_reset()
    try:
        yield mailbox
    finally:
        controller.stop()
        adapters_reset()


def email_touch(lead, **step) -> Touch:
    seq = sequence_save(
        data={"name": f"邮件{lead.pk}", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "email", **step}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    steps_advance(now=T0)
    touch = Touch.objects.get(lead=lead)
    with time_machine.travel(T0, tick=False):
        touches_dispatch(touch_ids=[touch.pk], now=T0)
    touch.refresh_from_db()
    return touch


def test_an_email_is_multipart_with_one_click_unsubscribe_headers(smtp):
    lead = LeadFactory(name="赵敏", email="zhaomin@example.cn")
    touch = email_touch(lead, text="{{ lead.name }}您好：\n新版白皮书已发布。")
    assert touch.state == "sent", touch.error
    ((mail_from, rcpt, _raw),) = smtp.messages
    assert mail_from == "marketing@nurture.example.com" and rcpt == ["zhaomin@example.cn"]
    (message,) = smtp.parsed()
    assert message.get_content_type() == "multipart/alternative"
    parts = {
        part.get_content_type(): part.get_content().replace("\r\n", "\n") for part in message.iter_parts()
    }
    assert set(parts) == {"text/plain", "text/html"}
    assert "赵敏您好：\n新版白皮书已发布。" in parts["text/plain"]
    assert "<p>赵敏您好：<br>新版白皮书已发布。</p>" in parts["text/html"]
    assert message["Subject"] == "来自孵化科技的资料"
    # RFC 8058: an HTTPS URI to POST to, and the one-click marker.
    unsubscribe = str(message["List-Unsubscribe"]).strip()  # a long header is folded
    assert unsubscribe.startswith(f"<{PUBLIC}/u/") and unsubscribe.endswith("/>")
    token = unsubscribe[len(f"<{PUBLIC}/u/") : -2]
    assert unsubscribe_token_read(token=token) == (lead.pk, "email")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe[1:-1] in parts["text/plain"] and unsubscribe[1:-1] in parts["text/html"]
    message_id = str(message["Message-ID"]).strip()
    assert message_id == f"<{touch.idempotency_key}@nurture.example.com>"
    assert touch.provider_ref == message_id


def test_the_content_link_is_in_both_parts(smtp):
    asset = ContentAsset.objects.create(
        slug="wp-mfg", title="制造业数字化白皮书", form="whitepaper", awareness="problem_aware", funnel="tofu"
    )
    touch = email_touch(LeadFactory(email="reader@example.cn"), content_id=asset.pk)
    assert touch.state == "sent", touch.error
    (message,) = smtp.parsed()
    parts = {
        part.get_content_type(): part.get_content().replace("\r\n", "\n") for part in message.iter_parts()
    }
    link = next(word for word in parts["text/plain"].split() if "/c/" in word)
    assert link.startswith("http")
    assert f'<a href="{link}">' in parts["text/html"]


def test_a_refused_recipient_fails_the_touch_once(smtp):
    lead = LeadFactory(email="nobody@example.cn")
    touch = email_touch(lead, text="您好")
    assert (touch.state, touch.attempts) == ("failed", 1)
    assert "recipient_refused" in touch.error
    assert OutboxMessage.objects.filter(type="touch.failed", lead_id=lead.pk).count() == 1


def test_a_deferred_recipient_and_a_dead_server_are_retried(smtp, settings):
    touch = email_touch(LeadFactory(email="busy@example.cn"), text="您好")
    assert touch.state == "scheduled" and touch.due_at == T0 + timedelta(minutes=1)
    settings.EMAIL_PORT = free_port()  # nothing listens there
    touch = email_touch(LeadFactory(email="later@example.cn"), text="您好")
    assert touch.state == "scheduled" and touch.attempts == 1
    assert smtp.messages == []


def test_a_lead_without_an_address_is_refused_before_sending(smtp):
    touch = email_touch(LeadFactory(email=None), text="您好")
    assert (touch.state, touch.skip_reason) == ("skipped", "policy:no_email")
    assert smtp.messages == []


def test_without_a_sender_the_channel_is_not_configured(settings):
    settings.EMAIL_FROM = ""
    adapters_reset()
    assert adapter_for("email") is None
    settings.EMAIL_FROM = "marketing@nurture.example.com"
    adapters_reset()
    assert adapter_for("email") is not None
    adapters_reset()


# --- Bounces.


def bounce(client, body, token=SECRET):
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    return client.post(
        "/channels/email/bounces/", data=json.dumps(body), content_type="application/json", **headers
    )


def test_a_hard_bounce_fails_the_touch_and_opts_the_lead_out(client, smtp):
    lead = LeadFactory(email="zhaomin@example.cn")
    touch = email_touch(lead, text="您好")
    body = {"email": "ZhaoMin@example.cn", "message_id": touch.provider_ref, "type": "hard"}
    assert bounce(client, body).status_code == 200
    assert bounce(client, body).status_code == 200  # replayed
    touch.refresh_from_db()
    assert touch.state == "failed" and "hard bounce" in touch.error
    assert OutboxMessage.objects.filter(type="touch.failed", lead_id=lead.pk).count() == 1
    types = sorted(Event.objects.filter(lead=lead).values_list("type", "properties__channel"))
    assert types == [("email_bounced", None), ("unsubscribed", "email")]
    assert InboundPayload.objects.filter(source="email").count() == 1


def test_a_soft_bounce_fails_the_touch_but_keeps_the_lead_subscribed(client, smtp):
    lead = LeadFactory(email="soft@example.cn")
    touch = email_touch(lead, text="您好")
    bounce(client, {"email": "soft@example.cn", "message_id": touch.provider_ref, "type": "soft"})
    touch.refresh_from_db()
    assert touch.state == "failed"
    assert list(Event.objects.filter(lead=lead).values_list("type", flat=True)) == ["email_bounced"]


def test_a_complaint_opts_out_and_the_touch_stays_sent(client, smtp):
    lead = LeadFactory(email="angry@example.cn")
    touch = email_touch(lead, text="您好")
    bounce(client, [{"email": "angry@example.cn", "message_id": touch.provider_ref, "type": "complaint"}])
    touch.refresh_from_db()
    assert touch.state == "sent"
    assert Event.objects.filter(lead=lead, type="unsubscribed", properties__channel="email").count() == 1


@pytest.mark.parametrize("token", ["", "wrong"])
def test_the_bounce_webhook_needs_its_secret(client, smtp, token):
    LeadFactory(email="x@example.cn")
    assert bounce(client, {"email": "x@example.cn", "type": "hard"}, token=token).status_code == 401
    assert not InboundPayload.objects.exists() and not Event.objects.exists()


@pytest.mark.parametrize("body", [{"email": "x@example.cn", "type": "bounced"}, {"type": "hard"}, [1], "x"])
def test_a_malformed_bounce_is_refused(client, smtp, body):
    assert bounce(client, body).status_code == 400
    assert not InboundPayload.objects.exists()


def test_anymail_tracking_events_are_bounces(settings, smtp):
    from anymail.signals import AnymailTrackingEvent, tracking

    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    lead = LeadFactory(email="esp@example.cn")
    touch = email_touch(lead, text="您好")
    assert (
        touch.state == "sent" and touch.provider_ref == "0"
    )  # the ESP's id (the test backend's outbox index)
    event = AnymailTrackingEvent(
        event_type="bounced", recipient="esp@example.cn", message_id="0", event_id="ev1"
    )
    tracking.send(sender=object, event=event, esp_name="Test")
    touch.refresh_from_db()
    assert touch.state == "failed"
    assert Event.objects.filter(lead=lead, type="unsubscribed", properties__channel="email").exists()
    opened = AnymailTrackingEvent(event_type="opened", recipient="esp@example.cn", message_id="0")
    assert email_anymail_tracking(event=opened, esp_name="Test") == 0
