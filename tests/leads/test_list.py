"""The lead list: filters, keyset cursor pagination, bounded queries."""

from datetime import timedelta

import pytest
from django.utils.timezone import now as timezone_now

from leads.models import Lead
from leads.services import lead_tags_change
from tests.factories import LeadFactory, UserFactory

pytestmark = pytest.mark.django_db


def _all_pages(api, url):
    ids, pages = [], 0
    while url:
        body = api.get(url).json()
        ids += [lead["id"] for lead in body["results"]]
        url = body["next"]
        pages += 1
    return ids, pages


def test_filters(api):
    sdr = UserFactory(username="sdr1")
    hot = LeadFactory(
        stage="mql", temperature="hot", owner=sdr, name="陈静", company="杭州云栖数智科技有限公司"
    )
    cold = LeadFactory(stage="mil", temperature="cold", email="li.qiang@example.com", external_id="CRM-9")
    lead_tags_change(lead=hot, add=["need:全渠道获客"], now=timezone_now())

    def ids(query):
        response = api.get(f"/api/v1/leads/?{query}")
        assert response.status_code == 200, response.content
        return [lead["id"] for lead in response.json()["results"]]

    assert ids("stage=mql") == [hot.pk]
    assert ids("temperature=cold") == [cold.pk]
    assert ids("tag=need:全渠道获客") == [hot.pk]
    assert ids("tag=need:nothing") == []
    assert ids("owner=sdr1") == [hot.pk]
    assert ids(f"owner={sdr.pk}") == [hot.pk]
    assert ids("q=云栖") == [hot.pk]
    assert ids("q=陈静") == [hot.pk]
    assert ids(f"q={hot.phone[-8:]}") == [hot.pk]
    assert ids("q=LI.QIANG") == [cold.pk]
    assert ids("email=Li.Qiang@Example.com") == [cold.pk]
    assert ids("external_id=CRM-9") == [cold.pk]
    assert ids(f"phone={hot.phone[3:6]} {hot.phone[6:10]} {hot.phone[10:]}") == [hot.pk]
    assert api.get("/api/v1/leads/?phone=12345").status_code == 400
    assert api.get("/api/v1/leads/?stage=nonsense").status_code == 400
    assert api.get("/api/v1/leads/?updated_since=yesterday").status_code == 400
    assert api.get("/api/v1/leads/?cursor=garbage").status_code == 400


def test_cursor_pagination_visits_every_lead_once_newest_first(api):
    leads = LeadFactory.create_batch(23)
    ids, pages = _all_pages(api, "/api/v1/leads/?page_size=5")
    assert ids == sorted((lead.pk for lead in leads), reverse=True)
    assert pages == 5


def test_updated_since_orders_by_update_time_then_id(api):
    old = LeadFactory()
    Lead.objects.filter(pk=old.pk).update(updated_at=timezone_now() - timedelta(days=2))
    recent = LeadFactory.create_batch(7)
    since = (timezone_now() - timedelta(days=1)).isoformat()
    ids, _ = _all_pages(api, f"/api/v1/leads/?updated_since={since.replace('+', '%2B')}&page_size=3")
    assert ids == [lead.pk for lead in sorted(recent, key=lambda lead: (lead.updated_at, lead.pk))]
    # Touching a lead moves it to the end of the sync order.
    api.patch(f"/api/v1/leads/{recent[0].pk}/", {"title": "CTO"}, format="json")
    ids, _ = _all_pages(api, f"/api/v1/leads/?updated_since={since.replace('+', '%2B')}&page_size=3")
    assert ids[-1] == recent[0].pk and len(ids) == 7


def test_list_and_detail_queries_do_not_grow_with_leads(api, django_assert_max_num_queries):
    sdr = UserFactory()
    for lead in LeadFactory.create_batch(60, owner=sdr):
        lead_tags_change(lead=lead, add=["industry:制造", "need:私域运营"], now=timezone_now())
    with django_assert_max_num_queries(6):
        body = api.get("/api/v1/leads/?page_size=50&tag=industry:制造").json()
    assert len(body["results"]) == 50
    assert body["results"][0]["tags"] == ["industry:制造", "need:私域运营"]
    assert body["results"][0]["owner"] == sdr.username


def test_detail_shows_contract_fields(api):
    lead = LeadFactory(stage="mil")
    body = api.get(f"/api/v1/leads/{lead.pk}/").json()
    for field in (
        "id",
        "external_id",
        "name",
        "company",
        "title",
        "industry",
        "company_size",
        "phone",
        "email",
        "wecom_external_userid",
        "wechat_unionid",
        "source",
        "stage",
        "bant",
        "consent",
        "do_not_contact",
        "owner",
        "score",
        "temperature",
        "tags",
        "pools",
        "created_at",
        "updated_at",
    ):
        assert field in body
    assert api.get("/api/v1/leads/99999999/").status_code == 404
