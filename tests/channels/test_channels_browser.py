"""Pages of the channels in a real Chromium: a lead opens the unsubscribe link of an email on a phone and
taps the button; a marketer sees which channels are not configured or paused and resumes one."""

import os
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils.timezone import now as timezone_now

from channels.email import unsubscribe_token
from channels.models import ChannelHealth
from leads.models import Event
from tests.conftest import CHROMIUM
from tests.factories import LeadFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium at /usr/bin/chromium",
    ),
]


def test_a_lead_unsubscribes_from_email_on_a_phone(live_server, transactional_db, page):
    from playwright.sync_api import expect

    lead = LeadFactory(email="li.na@example.cn")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/u/{unsubscribe_token(lead_id=lead.pk)}/", wait_until="networkidle")
    assert not Event.objects.filter(lead=lead, type="unsubscribed").exists()  # opening only asks
    page.get_by_role("button").click()
    expect(page.locator("h1")).to_have_text("Unsubscribed")
    expect(page.locator(".landing-thanks")).to_be_visible()
    (event,) = Event.objects.filter(lead=lead, type="unsubscribed")
    assert event.properties["channel"] == "email"


def test_a_marketer_sees_the_channels_and_resumes_a_paused_one(live_server, transactional_db, page, settings):
    from playwright.sync_api import expect

    from channels.registry import adapters_reset

    settings.WECOM_CORP_ID = ""
    adapters_reset()
    get_user_model().objects.create_superuser("marketer", "m@example.cn", "demo-pass-123")
    ChannelHealth.objects.create(
        channel="sms",
        consecutive_failures=5,
        paused_until=timezone_now() + timedelta(minutes=10),
        last_error="503",
    )
    page.goto(f"{live_server.url}/admin/login/?next=/admin/nurture_channels/channelhealth/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", "demo-pass-123")
    page.click("input[type=submit]")
    sms = page.locator("tr", has=page.locator("text=(sms)"))
    expect(sms).to_contain_text("paused until")
    wecom = page.locator("tr", has=page.locator("text=(wecom)"))
    expect(wecom).to_contain_text("WECOM_CORP_ID")
    sms.locator("input[type=checkbox]").check()
    page.select_option("select[name=action]", "resume_now")
    page.click("button[name=index]")
    expect(page.locator("tr", has=page.locator("text=(sms)"))).not_to_contain_text("paused until")
    adapters_reset()
