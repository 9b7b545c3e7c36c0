"""The pool editor: bad rules refused with their path, a live preview, evaluation history."""

import json
import os

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils.timezone import localtime
from django.utils.timezone import now as timezone_now

from leads.models import Pool, PoolMembership
from leads.pools import pool_evaluate_full
from tests.conftest import CHROMIUM
from tests.factories import LeadFactory


@pytest.fixture
def marketer(db):
    user = get_user_model().objects.create_user(username="marketer", password="demo-pass-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="leads"))
    return user


@pytest.mark.django_db
def test_changelist_and_change_page(client, marketer, django_assert_max_num_queries):
    LeadFactory.create_batch(5, industry="制造")
    LeadFactory.create_batch(3, industry="教育")
    pool = Pool.objects.create(
        slug="mfg", name="制造业", rule={"field": "industry", "op": "eq", "value": "制造"}
    )
    pool_evaluate_full(pool=pool, now=timezone_now())
    client.force_login(marketer)
    with django_assert_max_num_queries(12):
        page = client.get("/admin/leads/pool/").content.decode()
    assert "制造业" in page
    page = client.get(f"/admin/leads/pool/{pool.pk}/change/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<strong class="pool-preview-count">5</strong>' in page
    assert '<svg class="pool-history"' in page, page[page.find("Members per day") - 300 :][:800]
    assert "<td>full</td>" in page, page[page.find("Latest evaluations") :][:1200]


@pytest.mark.django_db
def test_a_bad_rule_is_refused_with_its_path(client, marketer):
    client.force_login(marketer)
    response = client.post(
        "/admin/leads/pool/add/",
        {
            "name": "坏规则",
            "slug": "bad",
            "rule": json.dumps({"all": [{"score_gte": 1}, {"event": "x", "within_days": 0}]}),
            "priority": 100,
            "active": "on",
        },
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 200
    assert "all[1].within_days: must be a positive integer" in response.content.decode()
    assert not Pool.objects.filter(slug="bad").exists()
    response = client.post(
        "/admin/leads/pool/add/",
        {
            "name": "好规则",
            "slug": "good",
            "rule": json.dumps({"score_gte": 1}),
            "priority": 100,
            "active": "on",
        },
    )
    assert response.status_code == 302
    assert Pool.objects.get(slug="good").rule_changed_at is not None


@pytest.mark.django_db
def test_preview_endpoint_counts_an_unsaved_rule(client, marketer):
    LeadFactory.create_batch(4, score=80)
    LeadFactory.create_batch(2, score=10)
    client.force_login(marketer)
    body = client.post("/admin/leads/pool/preview/", {"rule": json.dumps({"score_gte": 50})}).json()
    assert body["count"] == 4 and len(body["sample"]) == 4
    bad = client.post("/admin/leads/pool/preview/", {"rule": json.dumps({"score_gte": "x"})})
    assert bad.status_code == 400 and "score_gte" in bad.json()["error"]
    client.logout()
    assert client.post("/admin/leads/pool/preview/", {"rule": "{}"}).status_code == 302  # to the login page


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"), reason="needs Debian's chromium")
def test_the_preview_follows_the_rule_as_it_is_typed(live_server, page, transactional_db):
    get_user_model().objects.create_superuser(username="marketer", password="demo-pass-123")
    LeadFactory.create_batch(3, industry="制造")
    LeadFactory.create_batch(2, industry="教育")
    pool = Pool.objects.create(
        slug="mfg", name="制造业", rule={"field": "industry", "op": "eq", "value": "制造"}
    )
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", "demo-pass-123")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/leads/pool/{pool.pk}/change/")
    count = page.locator(".pool-preview-count")
    assert count.inner_text() == "3"
    page.fill("textarea.pool-rule", json.dumps({"field": "industry", "op": "in", "value": ["制造", "教育"]}))
    page.wait_for_function("document.querySelector('.pool-preview-count').textContent === '5'")
    page.fill("textarea.pool-rule", json.dumps({"field": "industry", "op": "like", "value": "x"}))
    error = page.locator(".pool-preview-error")
    error.wait_for(state="visible")
    assert "op: must be one of" in error.inner_text()


@pytest.mark.django_db
def test_the_lead_page_shows_its_pools_with_since_when(client, marketer):
    lead = LeadFactory(industry="制造")
    pool = Pool.objects.create(
        slug="mfg", name="制造业客户", rule={"field": "industry", "op": "eq", "value": "制造"}
    )
    pool_evaluate_full(pool=pool, now=timezone_now())
    client.force_login(marketer)
    page = client.get(f"/admin/leads/lead/{lead.pk}/change/").content.decode()
    joined = localtime(PoolMembership.objects.get(lead=lead).joined_at).date()
    assert f'制造业客户</a> <span class="quiet">{joined}</span>' in page
