"""Gated landing pages: consent required, bad input shown field by field with nothing saved, a known
phone is the same lead, CSRF on, rate limited per IP; a valid submission serves the download."""

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.test import Client, override_settings

from content.models import ConsentText, ContentAsset
from content.services import link_get_or_create, link_path
from leads.models import Event, Lead, LeadTag
from leads.tagging import tags_get_or_create
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def asset():
    ConsentText.objects.create(version="2026-01", text="同意我们就本资料与您联系。")
    asset = ContentAsset.objects.create(
        slug="wp-online-acquisition",
        title="线上获客白皮书",
        form="whitepaper",
        awareness="problem_aware",
        funnel="tofu",
        gated=True,
        summary="12 个线上获客渠道的投入产出。",
        call_to_action="免费下载",
    )
    asset.file.save("online-acquisition.pdf", ContentFile(b"%PDF-1.4 whitepaper"))
    asset.tags.set(tags_get_or_create(names=["topic:线上获客", "need:全渠道获客"]).values())
    return asset


def _form(**values):
    return {
        "name": "张伟",
        "phone": "138 0013 8000",
        "company": "苏州恒立精密机械有限公司",
        "title": "市场总监",
        "consent": "on",
        "consent_version": "2026-01",
        **values,
    }


def test_the_page_shows_the_summary_and_the_form(client, asset):
    page = client.get("/p/wp-online-acquisition/").content.decode()
    assert "线上获客白皮书" in page and "12 个线上获客渠道" in page and "免费下载" in page
    assert 'name="consent"' in page and 'value="2026-01"' in page and "csrfmiddlewaretoken" in page
    assert client.get("/p/no-such-asset/").status_code == 404


def test_consent_is_required_and_bad_input_is_shown_field_by_field(client, asset):
    response = client.post(
        "/p/wp-online-acquisition/", _form(consent="", phone="12345"), HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="error-consent"' in page and 'id="error-phone"' in page
    assert "Please enter a valid mainland mobile number." in page
    assert 'value="张伟"' in page  # what was typed is kept
    assert not Lead.objects.exists() and not Event.objects.exists()
    # A page rendered with a consent text no longer in use asks again.
    response = client.post(
        "/p/wp-online-acquisition/", _form(consent_version="2025-01"), HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 400 and "The terms have changed" in response.content.decode()
    assert not Lead.objects.exists()


def test_a_submission_upserts_the_lead_stores_consent_and_serves_the_download(client, asset):
    known = LeadFactory(phone="+8613800138000", name="张先生", company="", consent=False)
    response = client.post("/p/wp-online-acquisition/", _form())
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    assert b"".join(response.streaming_content) == b"%PDF-1.4 whitepaper"
    lead = Lead.objects.get()
    assert lead.pk == known.pk  # a known phone (typed with spaces) is the same lead
    assert (lead.name, lead.company, lead.title) == ("张伟", "苏州恒立精密机械有限公司", "市场总监")
    assert lead.consent and lead.consent_version == "2026-01" and lead.consent_at is not None
    types = sorted(Event.objects.filter(lead=lead).values_list("type", flat=True))
    assert types == ["content_viewed", "form_submitted"]
    assert set(LeadTag.objects.filter(lead=lead).values_list("tag__name", flat=True)) == {
        "topic:线上获客",
        "need:全渠道获客",
    }
    asset.refresh_from_db()
    assert (asset.views, asset.unique_viewers) == (1, 1)


def test_a_new_person_becomes_a_lead_with_the_page_as_source(client, asset):
    client.post("/p/wp-online-acquisition/", _form(phone="+86 139 0000 1111"))
    lead = Lead.objects.get()
    assert lead.phone == "+8613900001111" and lead.source == "落地页:wp-online-acquisition"


def test_csrf_is_enforced(asset):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/p/wp-online-acquisition/", _form()).status_code == 403
    page = strict.get("/p/wp-online-acquisition/")
    token = page.cookies["csrftoken"].value
    response = strict.post("/p/wp-online-acquisition/", {**_form(), "csrfmiddlewaretoken": token})
    assert response.status_code == 200 and Lead.objects.count() == 1


@override_settings(NURTURE_LANDING_RATE="3/h")
def test_submissions_are_rate_limited_per_ip(client, asset):
    cache.clear()
    for n in range(3):
        assert client.post("/p/wp-online-acquisition/", _form(phone=f"+861390000{n:04d}")).status_code == 200
    response = client.post("/p/wp-online-acquisition/", _form(phone="+8613900009999"))
    assert response.status_code == 429
    assert Lead.objects.count() == 3
    other = Client(REMOTE_ADDR="10.1.2.3")
    assert other.post("/p/wp-online-acquisition/", _form(phone="+8613900009999")).status_code == 200


BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.44"


def test_a_gated_link_then_its_form_counts_one_view_with_the_touch(client, asset):
    lead = LeadFactory(phone="+8613800138000")
    link = link_get_or_create(asset=asset, lead=lead, touch_id=77)
    landing = client.get(link_path(link), HTTP_USER_AGENT=BROWSER)["Location"]
    assert landing.startswith("/p/wp-online-acquisition/?t=")
    assert client.get(landing).status_code == 200

    response = client.post(landing, _form())

    assert response.status_code == 200 and Lead.objects.get().pk == lead.pk
    view = Event.objects.get(type="content_viewed")
    assert view.properties["via"] == "landing" and view.properties["touch"] == 77
    assert view.properties["link"] == link.token and "link_lead" not in view.properties
    assert Event.objects.filter(type="link_clicked").count() == 1
    assert LeadTag.objects.filter(lead=lead).count() == 2
    assert set(LeadTag.objects.values_list("count", flat=True)) == {1}
    asset.refresh_from_db()
    assert (asset.views, asset.unique_viewers) == (1, 1)


def test_a_forwarded_gated_link_records_the_view_on_whoever_fills_in_the_form(client, asset):
    sender = LeadFactory(phone="+8613900000001")
    link = link_get_or_create(asset=asset, lead=sender, touch_id=78)
    landing = client.get(link_path(link), HTTP_USER_AGENT=BROWSER)["Location"]

    client.post(landing, _form(phone="+86 139 0000 2222"))

    colleague = Lead.objects.get(phone="+8613900002222")
    assert Lead.objects.count() == 2  # identity matching decides; the token merges no one
    view = Event.objects.get(type="content_viewed")
    assert view.lead_id == colleague.pk and view.properties["touch"] == 78
    assert view.properties["link_lead"] == sender.pk
    assert not LeadTag.objects.filter(lead=sender).exists()
    # A tampered ?t= is ignored: the view is recorded, without a touch.
    client.post("/p/wp-online-acquisition/?t=forged:token", _form(phone="+86 139 0000 3333"))
    third = Event.objects.filter(type="content_viewed").order_by("-id").first()
    assert third.lead.phone == "+8613900003333" and "touch" not in third.properties


@override_settings(NURTURE_LANDING_RATE="2/h")
def test_the_rate_limit_trusts_x_forwarded_for_only_behind_configured_proxies(client, asset, settings):
    def post(n, forwarded):
        return client.post(
            "/p/wp-online-acquisition/",
            _form(phone=f"+861390000{n:04d}"),
            HTTP_X_FORWARDED_FOR=forwarded,
            REMOTE_ADDR="10.0.0.1",
        ).status_code

    # No proxy configured: the header is the client's to forge, so it changes nothing.
    assert [post(n, f"203.0.113.{n}") for n in range(3)] == [200, 200, 429]
    cache.clear()
    settings.NURTURE_TRUSTED_PROXY_COUNT = 1
    # Behind one proxy: the entry it appended is the client; what the client sent before it is not.
    assert [post(n, f"198.51.100.{n}, 203.0.113.7") for n in range(3, 6)] == [200, 200, 429]
    assert post(6, "203.0.113.8") == 200
    settings.NURTURE_TRUSTED_PROXY_COUNT = 2
    # Behind two: the client is the second entry from the end (203.0.113.8 posts a second and third time).
    assert post(7, "198.51.100.9, 203.0.113.8, 10.0.0.2") == 200
    assert post(8, "198.51.100.9, 203.0.113.8, 10.0.0.2") == 429
    assert post(9, "198.51.100.9, 203.0.113.10, 10.0.0.2") == 200
