"""The content API (assets with tags and stats), content views on the timeline, and the analytics
pages of the admin (per asset and per tag, sortable, CSV)."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils.timezone import now as timezone_now

from content.models import ContentAsset, TrackedLink
from content.services import content_view_record, link_get_or_create, link_open, link_path
from leads.services import lead_stage_set
from leads.tagging import tags_get_or_create
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


@pytest.fixture
def story():
    """Two assets: the whitepaper sent to three leads and opened by two, one of whom became MQL a week
    later; the case study sent to one lead, never opened."""
    now = timezone_now()
    paper = ContentAsset.objects.create(
        slug="wp", title="线上获客白皮书", form="whitepaper", awareness="problem_aware", funnel="tofu"
    )
    paper.tags.set(tags_get_or_create(names=["need:全渠道获客", "form:白皮书"]).values())
    case = ContentAsset.objects.create(
        slug="case", title="制造业案例", form="case_study", awareness="solution_aware", funnel="mofu"
    )
    case.tags.set(tags_get_or_create(names=["need:全渠道获客", "industry:制造"]).values())
    leads = [LeadFactory(stage="mil") for _ in range(3)]
    links = [link_get_or_create(asset=paper, lead=lead, now=now - timedelta(days=10)) for lead in leads]
    link_open(token=links[0].token, method="GET", user_agent=BROWSER, now=now - timedelta(days=9))
    link_open(token=links[0].token, method="GET", user_agent=BROWSER, now=now - timedelta(days=9))
    link_open(token=links[1].token, method="GET", user_agent=BROWSER, now=now - timedelta(days=9))
    lead_stage_set(lead=leads[0], stage="mql", reason="需求明确", now=now - timedelta(days=2))
    link_get_or_create(asset=case, lead=leads[2], now=now - timedelta(days=3))
    return {"paper": paper, "case": case, "leads": leads}


def test_content_api_lists_assets_with_tags_and_stats(api, story):
    body = api.get("/api/v1/content/").json()
    by_slug = {item["slug"]: item for item in body["results"]}
    assert by_slug["wp"]["tags"] == ["form:白皮书", "need:全渠道获客"]
    assert by_slug["wp"]["stats"] == {
        "sent": 3,
        "opened": 2,
        "open_rate": 0.6667,
        "views": 3,
        "unique_viewers": 2,
        "mql_after": 1,
        "sql_after": 0,
    }
    assert by_slug["case"]["stats"]["open_rate"] == 0.0 and by_slug["wp"]["landing_url"] == "/p/wp/"
    assert [
        item["slug"] for item in api.get("/api/v1/content/", {"tag": "industry:制造"}).json()["results"]
    ] == ["case"]
    assert api.get("/api/v1/content/", {"form": "whitepaper"}).json()["results"][0]["slug"] == "wp"


def test_the_timeline_shows_content_views(api, story):
    lead = story["leads"][0]
    items = api.get(f"/api/v1/leads/{lead.pk}/timeline/").json()["results"]
    views = [item for item in items if item["type"] == "content_viewed"]
    assert len(views) == 2 and views[0]["summary"] == "content_viewed: 线上获客白皮书"


def test_analytics_per_asset_and_per_tag_sortable_and_as_csv(
    admin_client, story, django_assert_max_num_queries
):
    with django_assert_max_num_queries(8):
        page = admin_client.get("/admin/content/contentasset/analytics/", {"o": "-sent"}).content.decode()
    assert page.index("线上获客白皮书") < page.index("制造业案例")
    page = admin_client.get("/admin/content/contentasset/analytics/", {"o": "sent"}).content.decode()
    assert page.index("制造业案例") < page.index("线上获客白皮书")

    response = admin_client.get(
        "/admin/content/contentasset/analytics/", {"by": "tag", "o": "-unique_viewers", "format": "csv"}
    )
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    header, body = rows[0], {row[0]: row for row in rows[1:]}
    assert len(header) == 9
    # need:全渠道获客 is on both assets: 4 links sent, 2 opened, 2 viewers, one became MQL.
    assert body["need:全渠道获客"][1:] == ["2", "4", "2", "50.0%", "3", "2", "1", "0"]
    assert body["industry:制造"][1:] == ["1", "1", "0", "0.0%", "0", "0", "0", "0"]
    assert next(iter(body)) in ("need:全渠道获客", "form:白皮书")  # sorted by unique viewers


def test_asset_changelist_shows_the_figures(admin_client, story, django_assert_max_num_queries):
    content_view_record(asset=story["case"], lead=story["leads"][2], now=timezone_now())
    with django_assert_max_num_queries(12):
        page = admin_client.get("/admin/content/contentasset/", {"o": "-11"}).content.decode()
    assert "66.7%" in page and "0.0%" in page, page[page.find("result_list") :][:3000]


def test_the_lead_page_recommends_the_next_content(admin_client, story):
    lead = story["leads"][1]  # viewed the whitepaper; its need tag makes it solution aware
    page = admin_client.get(
        f"/admin/leads/lead/{lead.pk}/change/", HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()
    section = page[page.find("Next best content") :]
    assert "制造业案例" in section and "matches the stage (solution_aware)" in section
    assert "shares 1 tag(s) with the lead: need:全渠道获客" in section


def test_the_admin_revoke_action_makes_the_selected_links_404(admin_client, client, story, django_user_model):
    paper_links = list(TrackedLink.objects.filter(asset=story["paper"]).order_by("pk"))
    chosen, spared = paper_links[:2], paper_links[2]
    response = admin_client.post(
        "/admin/content/trackedlink/",
        {"action": "revoke", "_selected_action": [link.pk for link in chosen]},
        HTTP_ACCEPT_LANGUAGE="en",
        follow=True,
    )
    assert response.status_code == 200 and "2 link(s) revoked." in response.content.decode()
    assert set(TrackedLink.objects.exclude(revoked_at=None).values_list("pk", flat=True)) == {
        link.pk for link in chosen
    }
    for link in chosen:
        assert client.get(link_path(link), HTTP_USER_AGENT=BROWSER).status_code == 404
    assert client.get(link_path(spared), HTTP_USER_AGENT=BROWSER).status_code == 302

    # Revoking needs the change permission: a viewer of links is not offered the action.
    viewer = django_user_model.objects.create_user(username="viewer", password="pw-123456", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_trackedlink"))
    client.force_login(viewer)
    page = client.get("/admin/content/trackedlink/").content.decode()
    assert 'value="revoke"' not in page
    client.post("/admin/content/trackedlink/", {"action": "revoke", "_selected_action": [spared.pk]})
    spared.refresh_from_db()
    assert spared.revoked_at is None
