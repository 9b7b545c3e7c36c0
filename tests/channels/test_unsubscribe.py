"""The one-click unsubscribe link `/u/<token>/`: GET only asks, POST (the page's button, or a mail
client's RFC 8058 one-click POST without cookies or CSRF token) opts the lead out of email once; a forged
or mangled token is a 400 page and records nothing; the lead's next email is then skipped."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.core import signing
from django.test import Client

from channels.email import UNSUBSCRIBE_SALT, unsubscribe_token, unsubscribe_url
from leads.models import Event
from sequences.dispatch import steps_advance
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 0, tzinfo=SH)
pytestmark = pytest.mark.django_db


def optouts(lead) -> list[str]:
    return [e.properties.get("channel") for e in Event.objects.filter(lead=lead, type="unsubscribed")]


def test_the_link_is_absolute_under_the_public_url(settings):
    settings.NURTURE_PUBLIC_URL = "https://nurture.example.com/"
    url = unsubscribe_url(lead_id=42)
    assert url == f"https://nurture.example.com/u/{unsubscribe_token(lead_id=42)}/"


def test_get_asks_and_records_nothing(client):
    lead = LeadFactory(email="a@example.cn")
    response = client.get(f"/u/{unsubscribe_token(lead_id=lead.pk)}/", HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<form method="post"' in page and "Unsubscribe" in page
    assert client.head(f"/u/{unsubscribe_token(lead_id=lead.pk)}/").status_code == 200
    assert optouts(lead) == []


def test_the_page_speaks_chinese_by_default(client):
    lead = LeadFactory(email="a@example.cn")
    page = client.get(f"/u/{unsubscribe_token(lead_id=lead.pk)}/").content.decode()
    assert '<html lang="zh-hans">' in page


def test_the_button_unsubscribes_once(client):
    lead = LeadFactory(email="a@example.cn")
    url = f"/u/{unsubscribe_token(lead_id=lead.pk)}/"
    response = client.post(url, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    assert "Unsubscribed" in response.content.decode()
    assert client.post(url).status_code == 200  # clicked again
    assert optouts(lead) == ["email"]
    lead.refresh_from_db()
    assert not lead.do_not_contact  # only email is closed


def test_the_one_click_post_of_a_mail_client_needs_no_csrf_token():
    lead = LeadFactory(email="a@example.cn")
    mail_client = Client(enforce_csrf_checks=True)  # no cookie, no token: as Gmail's one-click POST
    response = mail_client.post(
        f"/u/{unsubscribe_token(lead_id=lead.pk)}/",
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert optouts(lead) == ["email"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_forged_or_mangled_token_is_refused(client, method):
    lead = LeadFactory(email="a@example.cn")
    genuine = unsubscribe_token(lead_id=lead.pk)
    forged = signing.Signer(salt="another-salt").sign_object({"l": lead.pk, "c": "email"})
    other_key = signing.Signer(key="not-our-secret-key", salt=UNSUBSCRIBE_SALT).sign_object(
        {"l": lead.pk, "c": "email"}
    )
    for token in (genuine[:-3] + "abc", forged, other_key, "nonsense"):
        response = getattr(client, method)(f"/u/{token}/", HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 400, token
        assert "Invalid unsubscribe link" in response.content.decode()
    assert optouts(lead) == []


def test_after_unsubscribing_the_next_email_is_skipped(client, settings):
    settings.EMAIL_FROM = "marketing@nurture.example.com"
    from channels.registry import adapters_reset

    adapters_reset()
    lead = LeadFactory(email="a@example.cn")
    seq = sequence_save(
        data={"name": "邮件培育", "status": "active", "quiet_hours": None},
        steps=[{"day": 2, "send_time": "10:00", "channel": "email", "text": "第二封"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    client.post(f"/u/{unsubscribe_token(lead_id=lead.pk)}/")
    steps_advance(now=datetime(2027, 3, 3, 10, 0, tzinfo=SH))
    touch = Touch.objects.get(lead=lead)
    assert (touch.state, touch.skip_reason) == ("skipped", "opted_out:email")
    adapters_reset()
