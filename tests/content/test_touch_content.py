"""The content of touches (the sequence dispatcher's hook): the given or recommended asset, the lead's link
for the touch and its absolute URL; and the links of a whole batch of touches in bounded queries."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from content.models import ContentAsset, TrackedLink
from content.services import content_for_touch, content_links_for_touches, link_get_or_create
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def _asset(slug, awareness="problem_aware", friction=1):
    return ContentAsset.objects.create(
        slug=slug, title=slug, form="article", awareness=awareness, funnel="tofu", friction=friction
    )


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.NURTURE_PUBLIC_URL = "https://go.nurture.cn/"


def test_a_touch_with_a_given_asset_gets_the_lead_s_link_for_that_touch():
    asset, lead = _asset("intro"), LeadFactory()
    content = content_for_touch(lead=lead, asset=asset, touch_id=501, now=NOW)
    assert content.asset == asset and content.signals == []
    assert (content.link.lead_id, content.link.touch_id, content.link.created_at) == (lead.pk, 501, NOW)
    assert content.url == f"https://go.nurture.cn/c/{content.link.token}/"
    again = content_for_touch(lead=lead, asset=asset, touch_id=501, now=NOW)
    assert again.link == content.link  # running the touch twice sends the same link


def test_a_touch_without_an_asset_carries_the_recommendation_and_its_signals():
    _asset("report", friction=3)
    intro = _asset("intro")
    lead = LeadFactory()
    content = content_for_touch(lead=lead, touch_id=502, now=NOW)
    assert content.asset == intro and content.link.asset_id == intro.pk
    assert content.signals[0] == "no need tag yet: learning about the problem"
    assert "friction 1/5, value proximity 1/5" in content.signals
    # What was sent is not recommended again; when nothing is left the touch carries nothing.
    assert content_for_touch(lead=lead, touch_id=503, now=NOW).asset.slug == "report"
    empty = content_for_touch(lead=lead, touch_id=504, now=NOW)
    assert (empty.asset, empty.link, empty.url) == (None, None, "")
    assert "nothing left to recommend" in empty.signals


def test_the_links_of_a_batch_of_touches_take_a_bounded_number_of_queries(django_assert_max_num_queries):
    assets = [_asset(f"a{n}") for n in range(5)]
    leads = LeadFactory.create_batch(100)
    items = [(1000 + n, leads[n % 100].pk, assets[n % 5].pk) for n in range(500)]
    existing = link_get_or_create(asset=assets[0], lead=leads[0], touch_id=1000)

    # One insert and one select (SQLite's 999-parameter limit splits the insert into a few).
    bound = 2 if connection.vendor == "postgresql" else 8
    with django_assert_max_num_queries(bound):
        urls = content_links_for_touches(items=items, now=NOW)

    assert len(urls) == 500 and TrackedLink.objects.count() == 500
    assert urls[1000] == f"https://go.nurture.cn/c/{existing.token}/"  # an existing link is kept
    tokens = dict(TrackedLink.objects.values_list("touch_id", "token"))
    assert all(urls[touch] == f"https://go.nurture.cn/c/{tokens[touch]}/" for touch, _, _ in items)
    link = TrackedLink.objects.get(touch_id=1257)
    assert (link.lead_id, link.asset_id, link.created_at) == (leads[57].pk, assets[2].pk, NOW)
    with django_assert_max_num_queries(bound):
        assert content_links_for_touches(items=items, now=NOW) == urls  # twice: the same links
    assert content_links_for_touches(items=[], now=NOW) == {}
