"""A lead merge folds the content rows of the merged lead into the survivor's: links, per-asset and per-tag
viewers are unique per lead, so clashing rows add up instead of violating the constraints, and a link
already sent to the merged lead keeps working."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from content.models import AssetViewer, ContentAsset, TagViewer, TrackedLink, TrackedLinkAlias
from content.services import link_get_or_create, link_open, link_path, links_revoke
from leads.models import Event, Lead, LeadTag
from leads.services import lead_merge
from leads.tagging import tags_get_or_create
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.44"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def _asset(slug, **kwargs):
    asset = ContentAsset.objects.create(
        slug=slug,
        title=f"白皮书 {slug}",
        form="whitepaper",
        awareness="problem_aware",
        funnel="tofu",
        target_url=f"https://www.example.cn/{slug}.pdf",
        **kwargs,
    )
    asset.tags.set(tags_get_or_create(names=["topic:线上获客", f"topic:{slug}"]).values())
    return asset


def _open(link, at):
    assert link_open(token=link.token, method="GET", user_agent=BROWSER, now=at).recorded


def test_an_api_upsert_merging_two_viewers_of_one_asset_folds_their_content_rows(api, client):
    paper, case, other = _asset("paper"), _asset("case"), _asset("other")
    older = LeadFactory(phone="+8613800000001", wecom_external_userid=None)
    newer = LeadFactory(phone=None, wecom_external_userid="wmNEW")
    # Both were sent the paper by hand (a clash on asset + lead, no touch) and both opened it.
    old_link, new_link = (link_get_or_create(asset=paper, lead=lead, now=NOW) for lead in (older, newer))
    _open(old_link, NOW + timedelta(days=1))
    _open(new_link, NOW + timedelta(days=2))
    _open(new_link, NOW + timedelta(days=5))
    # The same touch id on both (a clash with a touch), and links that only one of them has.
    touch_old = link_get_or_create(asset=case, lead=older, touch_id=41, now=NOW)
    touch_new = link_get_or_create(asset=case, lead=newer, touch_id=41, now=NOW - timedelta(days=1))
    _open(touch_new, NOW + timedelta(days=3))
    only_new = link_get_or_create(asset=other, lead=newer, touch_id=42, now=NOW)
    paper.refresh_from_db()
    assert paper.unique_viewers == 2

    response = api.post(
        "/api/v1/leads/upsert/", {"phone": "13800000001", "wecom_external_userid": "wmNEW"}, format="json"
    )

    assert response.status_code == 200 and response.json()["id"] == older.pk
    assert not Lead.objects.filter(pk=newer.pk).exists()
    assert set(TrackedLink.objects.values_list("lead_id", flat=True)) == {older.pk}
    kept = TrackedLink.objects.get(asset=paper, touch_id=None)
    assert kept.pk == old_link.pk and kept.opens == 3
    assert (kept.first_opened_at, kept.last_opened_at) == (NOW + timedelta(days=1), NOW + timedelta(days=5))
    kept_touch = TrackedLink.objects.get(asset=case, touch_id=41)
    assert kept_touch.pk == touch_old.pk and kept_touch.opens == 1
    assert kept_touch.created_at == NOW - timedelta(days=1)  # first sent
    assert TrackedLink.objects.get(pk=only_new.pk).lead_id == older.pk
    assert set(TrackedLinkAlias.objects.values_list("token", flat=True)) == {new_link.token, touch_new.token}

    viewer = AssetViewer.objects.get(asset=paper)
    assert (viewer.lead_id, viewer.views) == (older.pk, 3)
    assert (viewer.first_at, viewer.last_at) == (NOW + timedelta(days=1), NOW + timedelta(days=5))
    paper.refresh_from_db()
    assert (paper.views, paper.unique_viewers) == (3, 1)
    case.refresh_from_db()
    assert (case.views, case.unique_viewers) == (1, 1)
    shared = TagViewer.objects.get(tag__name="topic:线上获客")
    assert (shared.lead_id, shared.views) == (older.pk, 4)
    assert TagViewer.objects.filter(tag__name="topic:paper").get().views == 3

    # The token sent to the merged lead still redirects, and records the view on the survivor.
    response = client.get(link_path(new_link), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302 and response["Location"] == "https://www.example.cn/paper.pdf"
    view = Event.objects.filter(type="content_viewed").order_by("-id").first()
    assert view.lead_id == older.pk and view.properties["link"] == new_link.token
    kept.refresh_from_db()
    paper.refresh_from_db()
    assert kept.opens == 4 and (paper.views, paper.unique_viewers) == (4, 1)
    assert AssetViewer.objects.get(asset=paper).views == 4
    assert LeadTag.objects.get(lead=older, tag__name="topic:paper").count == 4


def test_a_revoked_token_stays_revoked_and_a_live_one_survives_a_revoked_clash(client):
    paper, case = _asset("paper"), _asset("case")
    survivor, merged = LeadFactory(), LeadFactory()
    revoked_of_merged = link_get_or_create(asset=paper, lead=merged, now=NOW)
    link_get_or_create(asset=paper, lead=survivor, now=NOW)
    revoked_of_survivor = link_get_or_create(asset=case, lead=survivor, now=NOW)
    live_of_merged = link_get_or_create(asset=case, lead=merged, now=NOW)
    links_revoke(links=TrackedLink.objects.filter(pk__in=[revoked_of_merged.pk, revoked_of_survivor.pk]))

    lead_merge(survivor=survivor, merged=merged, why="test", now=NOW)

    assert client.get(link_path(revoked_of_merged), HTTP_USER_AGENT=BROWSER).status_code == 404
    assert client.get(link_path(revoked_of_survivor), HTTP_USER_AGENT=BROWSER).status_code == 404
    assert client.get(link_path(live_of_merged), HTTP_USER_AGENT=BROWSER).status_code == 302
    assert TrackedLink.objects.get(asset=case).pk == live_of_merged.pk
    assert TrackedLink.objects.filter(lead=survivor).count() == 2


def test_a_link_folded_twice_keeps_every_token(client):
    paper = _asset("paper")
    first, second, third = LeadFactory(), LeadFactory(), LeadFactory()
    links = [link_get_or_create(asset=paper, lead=lead, now=NOW) for lead in (first, second, third)]
    lead_merge(survivor=second, merged=third, why="test", now=NOW)
    lead_merge(survivor=first, merged=second, why="test", now=NOW)
    assert TrackedLink.objects.get().pk == links[0].pk
    for link in links:
        assert client.get(link_path(link), HTTP_USER_AGENT=BROWSER).status_code == 302
    assert Event.objects.filter(type="content_viewed", lead=first).count() == 3
