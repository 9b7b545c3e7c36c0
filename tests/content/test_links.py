"""Tracked links: opening one records the view once, stamps the asset's tags, counts viewers per asset and
per tag, marks the lead dirty; forged and revoked tokens, HEAD and link-preview fetchers record nothing."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from content.models import AssetViewer, ContentAsset, TagViewer, TrackedLink
from content.services import link_get_or_create, link_path, links_revoke
from leads.models import DirtyLead, Event, LeadTag
from leads.tagging import tags_get_or_create
from tests.factories import LeadFactory

BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.44"


def _asset(slug="wp-acq", **kwargs):
    asset = ContentAsset.objects.create(
        slug=slug,
        title="线上获客白皮书",
        form="whitepaper",
        awareness="problem_aware",
        funnel="tofu",
        target_url="https://www.example.cn/wp.pdf",
        **kwargs,
    )
    asset.tags.set(tags_get_or_create(names=["topic:线上获客", "need:全渠道获客"]).values())
    return asset


@pytest.mark.django_db
def test_opening_a_link_records_the_view_and_stamps_the_tags(client):
    asset = _asset()
    lead, other = LeadFactory(), LeadFactory()
    link = link_get_or_create(asset=asset, lead=lead, touch_id=7)
    assert link_get_or_create(asset=asset, lead=lead, touch_id=7) == link  # one link per touch
    assert (
        len(link.token) <= 16 and link.token != link_get_or_create(asset=asset, lead=other, touch_id=7).token
    )
    DirtyLead.objects.all().delete()

    response = client.get(link_path(link), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302 and response["Location"] == "https://www.example.cn/wp.pdf"
    event = Event.objects.get(lead=lead, type="content_viewed")
    assert event.properties["asset"] == "wp-acq" and event.properties["touch"] == 7
    assert event.properties["user_agent"] == BROWSER
    stamped = dict(LeadTag.objects.filter(lead=lead).values_list("tag__name", "count"))
    assert stamped == {"topic:线上获客": 1, "need:全渠道获客": 1}
    assert DirtyLead.objects.filter(lead=lead).exists()

    client.get(link_path(link), HTTP_USER_AGENT=BROWSER)
    assert Event.objects.filter(lead=lead, type="content_viewed").count() == 2
    assert dict(LeadTag.objects.filter(lead=lead).values_list("tag__name", "count"))["need:全渠道获客"] == 2
    asset.refresh_from_db()
    link.refresh_from_db()
    assert (asset.views, asset.unique_viewers, link.opens) == (2, 1, 2)
    assert AssetViewer.objects.get(asset=asset, lead=lead).views == 2
    assert set(TagViewer.objects.filter(lead=lead).values_list("views", flat=True)) == {2}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "agent"),
    [
        ("head", BROWSER),
        ("get", "facebookexternalhit/1.1"),
        ("get", "Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)"),
        ("get", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"),
        ("get", "WhatsApp/2.23.20.0"),
        ("get", "TelegramBot (like TwitterBot)"),
        ("get", ""),
    ],
)
def test_head_requests_and_link_previews_do_not_count(client, method, agent):
    asset = _asset()
    link = link_get_or_create(asset=asset, lead=LeadFactory())
    response = getattr(client, method)(link_path(link), HTTP_USER_AGENT=agent)
    assert response.status_code == 302
    assert not Event.objects.exists() and not LeadTag.objects.exists()
    asset.refresh_from_db()
    assert asset.views == 0 and TrackedLink.objects.get().opens == 0


@pytest.mark.django_db
def test_forged_and_revoked_tokens_are_404_and_record_nothing(client):
    asset = _asset()
    link = link_get_or_create(asset=asset, lead=LeadFactory())
    assert client.get("/c/AAAAAAAAAAAAAAAA/", HTTP_USER_AGENT=BROWSER).status_code == 404
    assert client.get(f"/c/{link.token[:-1]}x/", HTTP_USER_AGENT=BROWSER).status_code == 404
    assert links_revoke(links=TrackedLink.objects.filter(pk=link.pk)) == 1
    assert client.get(link_path(link), HTTP_USER_AGENT=BROWSER).status_code == 404
    assert not Event.objects.exists()
    asset.refresh_from_db()
    assert asset.views == 0


@pytest.mark.django_db
def test_a_gated_asset_sends_the_link_to_its_form(client):
    asset = _asset(gated=True)
    link = link_get_or_create(asset=asset, lead=LeadFactory())
    response = client.get(link_path(link), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302 and response["Location"] == "/p/wp-acq/"


@pytest.mark.django_db(transaction=True)
def test_concurrent_opens_count_every_view_and_each_viewer_once(live_server):
    if connection.vendor != "postgresql":
        pytest.skip("concurrency is proven on PostgreSQL")
    asset = _asset()
    leads = [LeadFactory() for _ in range(3)]
    links = [link_get_or_create(asset=asset, lead=lead) for lead in leads]
    urls = [f"{live_server.url}{link_path(link)}" for link in links for _ in range(8)]

    def open_link(url):
        return httpx.get(url, headers={"User-Agent": BROWSER}, follow_redirects=False, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(open_link, urls)) == {302}
    asset.refresh_from_db()
    assert (asset.views, asset.unique_viewers) == (24, 3)
    assert Event.objects.filter(type="content_viewed").count() == 24
    assert set(LeadTag.objects.values_list("count", flat=True)) == {8}
    assert set(TrackedLink.objects.values_list("opens", flat=True)) == {8}
    assert TagViewer.objects.count() == 6 and set(TagViewer.objects.values_list("views", flat=True)) == {8}
