"""A visitor in a real Chromium on a phone-sized screen: fills the gated form, is told what is wrong,
agrees to the terms, and gets the whitepaper; the lead appears with its consent and the view."""

import os

import pytest
from django.core.files.base import ContentFile

from content.models import ConsentText, ContentAsset
from content.services import link_get_or_create, link_path
from leads.models import Event, Lead
from leads.tagging import tags_get_or_create
from tests.conftest import CHROMIUM
from tests.factories import LeadFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium at /usr/bin/chromium",
    ),
]


@pytest.fixture
def whitepaper(transactional_db):
    ConsentText.objects.create(version="2026-01", text="提交即表示您同意我们与您联系。")
    asset = ContentAsset.objects.create(
        slug="wp-online-acquisition",
        title="线上获客白皮书：B2B 企业不见面也成交",
        form="whitepaper",
        awareness="problem_aware",
        funnel="tofu",
        gated=True,
        summary="12 个线上获客渠道的投入产出。",
        call_to_action="免费下载白皮书",
    )
    asset.file.save("online-acquisition.pdf", ContentFile(b"%PDF-1.4 whitepaper"))
    asset.tags.set(tags_get_or_create(names=["need:全渠道获客"]).values())
    return asset


def test_a_visitor_submits_the_gated_form_and_downloads_the_whitepaper(
    live_server, whitepaper, page, tmp_path
):
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/p/wp-online-acquisition/")
    expect(page.locator("h1")).to_have_text("线上获客白皮书：B2B 企业不见面也成交")
    page.fill("#id_name", "张伟")
    page.fill("#id_phone", "138 0013")  # a number cut short
    page.fill("#id_company", "苏州恒立精密机械有限公司")
    page.get_by_role("button", name="免费下载白皮书").click()
    expect(page.locator("#error-phone")).to_be_visible()
    expect(page.locator("#error-consent")).to_be_visible()
    assert not Lead.objects.exists()

    expect(page.locator("#id_name")).to_have_value("张伟")  # what was typed is kept
    page.fill("#id_phone", "138 0013 8000")
    page.check("#id_consent")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="免费下载白皮书").click()
    download = download_info.value
    saved = tmp_path / "got.pdf"
    download.save_as(saved)
    assert saved.read_bytes() == b"%PDF-1.4 whitepaper"
    assert download.suggested_filename.endswith(".pdf")

    lead = Lead.objects.get()
    assert (lead.phone, lead.name, lead.consent_version) == ("+8613800138000", "张伟", "2026-01")
    assert set(Event.objects.filter(lead=lead).values_list("type", flat=True)) == {
        "form_submitted",
        "content_viewed",
    }


def test_a_lead_follows_its_gated_link_and_the_form_keeps_the_link_through_a_correction(
    live_server, whitepaper, page
):
    from playwright.sync_api import expect

    lead = LeadFactory(phone="+8613800138000")
    link = link_get_or_create(asset=whitepaper, lead=lead, touch_id=88)
    page.set_extra_http_headers({"User-Agent": "Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) Mobile"})
    page.goto(f"{live_server.url}{link_path(link)}")
    assert "/p/wp-online-acquisition/?t=" in page.url
    page.fill("#id_name", "张伟")
    page.fill("#id_phone", "138 0013 8000")
    page.fill("#id_company", "苏州恒立精密机械有限公司")
    page.get_by_role("button", name="免费下载白皮书").click()  # no consent yet: the form comes back
    expect(page.locator("#error-consent")).to_be_visible()
    page.check("#id_consent")
    with page.expect_download():
        page.get_by_role("button", name="免费下载白皮书").click()

    assert Lead.objects.get().pk == lead.pk
    assert list(Event.objects.filter(lead=lead).order_by("id").values_list("type", flat=True)) == [
        "link_clicked",
        "form_submitted",
        "content_viewed",
    ]
    assert Event.objects.get(type="content_viewed").properties["touch"] == 88
