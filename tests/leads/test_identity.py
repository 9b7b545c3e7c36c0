"""One person, one phone: every usual way of typing a mainland mobile number is the same lead."""

import pytest

from leads.identity import IdentityError, normalize_email, normalize_phone
from leads.models import Lead

SAME_NUMBER = [
    "13800138000",
    "138 0013 8000",
    "+86-138-0013-8000",
    "8613800138000",
    "+86 138 0013 8000",
    "0086 13800138000",
]


@pytest.mark.parametrize("typed", SAME_NUMBER)
def test_mainland_number_forms_normalise_to_one_e164(typed):
    assert normalize_phone(typed) == "+8613800138000"


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("12345", "not a valid phone number"),
        ("1380013800", "not a valid phone number"),
        ("010-62345678", "not a mainland mobile number"),
        ("call me", "not a phone number"),
    ],
)
def test_invalid_numbers_say_why(typed, reason):
    with pytest.raises(IdentityError, match=reason):
        normalize_phone(typed)


def test_email_is_lower_cased():
    assert normalize_email("  Li.Wei@Example.COM ") == "li.wei@example.com"


def test_all_forms_upsert_into_one_lead(api):
    ids = set()
    for typed in SAME_NUMBER:
        response = api.post("/api/v1/leads/upsert/", {"phone": typed}, format="json")
        assert response.status_code in (200, 201), response.content
        ids.add(response.json()["id"])
    assert len(ids) == 1
    assert Lead.objects.get().phone == "+8613800138000"


def test_invalid_phone_is_a_400_naming_the_field_and_reason(api):
    response = api.post("/api/v1/leads/", {"name": "王芳", "phone": "12345"}, format="json")
    assert response.status_code == 400
    assert "phone" in response.json()
    assert "not a valid phone number" in response.json()["phone"][0]
    assert not Lead.objects.exists()


def test_email_identity_matches_case_insensitively(api):
    first = api.post(
        "/api/v1/leads/upsert/", {"email": "Zhang.Wei@Huadong.cn", "name": "张伟"}, format="json"
    )
    second = api.post(
        "/api/v1/leads/upsert/", {"email": "zhang.wei@huadong.cn", "title": "IT经理"}, format="json"
    )
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["email"] == "zhang.wei@huadong.cn"
    assert second.json()["title"] == "IT经理"


def test_identities_are_unique_when_set_and_blank_is_not_an_identity(api):
    for _ in range(3):
        assert (
            api.post(
                "/api/v1/leads/", {"name": "无名", "phone": "", "email": None}, format="json"
            ).status_code
            == 201
        )
    assert Lead.objects.filter(phone__isnull=True, email__isnull=True).count() == 3
    assert api.post("/api/v1/leads/", {"phone": "13900139000"}, format="json").status_code == 201
    conflict = api.post("/api/v1/leads/", {"phone": "139 0013 9000"}, format="json")
    assert conflict.status_code == 409
