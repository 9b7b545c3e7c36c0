"""Bulk upsert: per-item results, good items land beside bad ones, bounded queries, in-batch duplicates."""

import pytest
from django.db import connection

from leads.models import Lead, LeadMerge, LeadTag
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


def _phone(n: int) -> str:
    return f"139{n:08d}"


def test_good_items_land_and_bad_items_say_why(api):
    existing = LeadFactory(phone="+8613900000002", company="")
    items = [
        {
            "phone": _phone(1),
            "name": "张伟",
            "company": "杭州云栖数智科技有限公司",
            "tags": ["industry:信息科技"],
        },
        {"phone": "12345", "name": "坏号码"},
        {"phone": _phone(2), "company": "苏州恒立精密机械有限公司"},
        {"name": "没有身份"},
        "not an object",
        {"email": "Li.Na@Example.com", "stage": "nonsense"},
        {"email": "li.na@example.com", "name": "李娜"},
    ]
    response = api.post("/api/v1/leads/bulk_upsert/", {"leads": items}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["created", "error", "updated", "error", "error", "error", "created"]
    assert [r["index"] for r in body["results"]] == list(range(7))
    assert (body["created"], body["updated"], body["errors"]) == (2, 1, 4)
    assert "phone" in body["results"][1]["errors"]
    assert "identity" in str(body["results"][3]["errors"])
    assert "stage" in body["results"][5]["errors"]
    assert body["results"][2]["id"] == existing.pk
    existing.refresh_from_db()
    assert existing.company == "苏州恒立精密机械有限公司"
    assert Lead.objects.get(phone="+8613900000001").name == "张伟"
    assert LeadTag.objects.get(lead__phone="+8613900000001").tag.name == "industry:信息科技"
    assert Lead.objects.get(email="li.na@example.com").name == "李娜"
    assert Lead.objects.count() == 3


def test_the_same_person_twice_in_one_batch_is_one_lead(api):
    items = [
        {"phone": "13800138000", "name": "王芳"},
        {"phone": "+86 138 0013 8000", "email": "wang.fang@example.com", "title": "市场总监"},
        {"email": "WANG.FANG@example.com", "company": "上海启明教育科技"},
    ]
    body = api.post("/api/v1/leads/bulk_upsert/", {"leads": items}, format="json").json()
    assert [r["status"] for r in body["results"]] == ["created", "updated", "updated"]
    assert len({r["id"] for r in body["results"]}) == 1
    lead = Lead.objects.get()
    assert (lead.name, lead.title, lead.company, lead.email) == (
        "王芳",
        "市场总监",
        "上海启明教育科技",
        "wang.fang@example.com",
    )


def test_an_item_naming_two_existing_leads_merges_them(api):
    a = LeadFactory(phone="+8613800000001")
    b = LeadFactory(phone=None, email="b@example.com")
    b_id = b.pk
    body = api.post(
        "/api/v1/leads/bulk_upsert/",
        {"leads": [{"phone": "13800000001", "email": "b@example.com"}, {"phone": _phone(9)}]},
        format="json",
    ).json()
    assert body["results"][0]["status"] == "updated" and body["results"][0]["id"] == a.pk
    assert body["results"][0]["merged_ids"] == [b_id]
    assert body["results"][1]["status"] == "created"
    assert LeadMerge.objects.get(merged_id=b_id).survivor_id == a.pk
    assert Lead.objects.get(pk=a.pk).email == "b@example.com"


def test_a_thousand_items_take_a_bounded_number_of_queries(api, django_assert_max_num_queries):
    LeadFactory.create_batch(50, phone=None)
    for n in range(300):
        LeadFactory(phone=f"+86139{n:08d}")
    items = [{"phone": _phone(n), "name": f"线索{n}", "tags": ["form:白皮书"]} for n in range(1000)]
    with django_assert_max_num_queries(25 if connection.vendor == "postgresql" else 80):
        body = api.post("/api/v1/leads/bulk_upsert/", {"leads": items}, format="json").json()
    assert (body["created"], body["updated"], body["errors"]) == (700, 300, 0)
    assert LeadTag.objects.filter(tag__name="form:白皮书").count() == 1000


def test_batch_limits(api):
    too_many = [{"phone": _phone(n)} for n in range(1001)]
    response = api.post("/api/v1/leads/bulk_upsert/", {"leads": too_many}, format="json")
    assert response.status_code == 400 and "leads" in response.json()
    assert not Lead.objects.exists()
    assert api.post("/api/v1/leads/bulk_upsert/", {"leads": []}, format="json").status_code == 400
    assert api.post("/api/v1/leads/bulk_upsert/", {"x": 1}, format="json").status_code == 400
