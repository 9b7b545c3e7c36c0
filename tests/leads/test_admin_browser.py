"""A marketer in a real Chromium: log in, find a lead by a phone typed with spaces, read its page."""

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from leads.services import lead_stage_set, lead_tags_change
from tests.factories import EventFactory, LeadFactory

CHROMIUM = Path("/usr/bin/chromium")
T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium); "
        "in CI (CI set) this test runs and fails instead",
    ),
]


@pytest.fixture
def story(transactional_db):
    """A marketer and a lead with tags, events and a stage change; another lead with a close number."""
    marketer = get_user_model().objects.create_user(
        username="marketer", password="demo-pass-123", is_staff=True
    )
    marketer.user_permissions.set(Permission.objects.filter(content_type__app_label="leads"))
    lead = LeadFactory(name="张伟", company="华东精密", phone="+8613800138000")
    LeadFactory(name="李娜", phone="+8613800138001")
    lead_tags_change(lead=lead, add=["industry:制造", "need:全渠道获客"], now=T0)
    lead_tags_change(lead=lead, add=["need:全渠道获客"], now=T0)
    EventFactory(lead=lead, type="registered", occurred_at=T0)
    EventFactory(
        lead=lead,
        type="content_viewed",
        occurred_at=T0 + timedelta(days=1),
        properties={"title": "制造业获客白皮书"},
    )
    lead_stage_set(lead=lead, stage="mql", reason="行业匹配", by=marketer, now=T0 + timedelta(days=2))
    return lead


def test_marketer_finds_a_lead_by_phone_and_reads_its_timeline(live_server, story, page):
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", "demo-pass-123")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()

    page.goto(f"{live_server.url}/admin/leads/lead/")
    page.fill("#searchbar", "138 0013 8000")
    page.press("#searchbar", "Enter")
    results = page.locator("#result_list tbody tr")
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text("华东精密")
    expect(page.locator("#result_list")).not_to_contain_text("李娜")

    results.first.get_by_role("link", name="张伟").click()
    expect(page).to_have_url(re.compile(rf"/admin/leads/lead/{story.pk}/change/"))

    timeline = page.locator(".nurture-timeline")
    expect(timeline).to_be_visible()
    items = timeline.locator("li")
    expect(items).to_have_count(3)
    expect(items.nth(0)).to_contain_text("rl → mql (行业匹配)")
    expect(items.nth(0)).to_contain_text("marketer")
    expect(items.nth(1)).to_contain_text("content_viewed: 制造业获客白皮书")
    expect(items.nth(2)).to_contain_text("registered")

    tags = page.locator("#lead_tags-group")
    expect(tags).to_contain_text("industry:制造")
    expect(tags).to_contain_text("need:全渠道获客")
    expect(tags.locator("tr", has_text="need:全渠道获客")).to_contain_text("2")
