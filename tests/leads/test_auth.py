"""API keys: hashed at rest, 401 without a valid key, 403 without the scope, throttled per key."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from leads.auth import _digest
from leads.models import ApiKey, Lead

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_the_key_once_and_stores_only_its_hash():
    out = io.StringIO()
    call_command("create_api_key", "crm-sync", "--scopes", "read", stdout=out, stderr=io.StringIO())
    plain = out.getvalue().strip()
    key = ApiKey.objects.get(name="crm-sync")
    assert key.scopes == ["read"]
    assert plain not in (key.digest, key.prefix) and key.digest == _digest(plain)
    assert not ApiKey.objects.filter(digest=plain).exists()
    with pytest.raises(CommandError):
        call_command("create_api_key", "crm-sync", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="scopes"):
        call_command(
            "create_api_key", "other", "--scopes", "admin", stdout=io.StringIO(), stderr=io.StringIO()
        )


def test_no_key_or_bad_key_is_401(client, api):
    assert client.get("/api/v1/leads/").status_code == 401
    assert client.get("/api/v1/leads/", HTTP_AUTHORIZATION="Token nope").status_code == 401
    assert client.get("/api/v1/leads/", HTTP_AUTHORIZATION="Token").status_code == 401
    assert client.get("/api/v1/leads/", HTTP_AUTHORIZATION="Bearer x").status_code == 401
    response = client.post("/api/v1/events/", {}, content_type="application/json")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


def test_revoked_key_is_401(api):
    ApiKey.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert api.get("/api/v1/leads/").status_code == 401


def test_read_key_cannot_write(make_client):
    reader = make_client(scopes=["read"])
    assert reader.get("/api/v1/leads/").status_code == 200
    response = reader.post("/api/v1/leads/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert "write" in response.json()["detail"]
    assert reader.post("/api/v1/events/", {"lead": 1, "type": "x"}, format="json").status_code == 403
    assert not Lead.objects.exists()
    writer = make_client(scopes=["write"])
    assert writer.get("/api/v1/leads/").status_code == 403


def test_each_key_is_throttled_on_its_own(make_client, settings):
    from leads.auth import ApiKeyRateThrottle

    rates = {**ApiKeyRateThrottle.THROTTLE_RATES, "api_key": "3/min"}
    original = ApiKeyRateThrottle.THROTTLE_RATES
    ApiKeyRateThrottle.THROTTLE_RATES = rates
    try:
        first, second = make_client(), make_client()
        assert [first.get("/api/v1/leads/").status_code for _ in range(4)] == [200, 200, 200, 429]
        assert second.get("/api/v1/leads/").status_code == 200
    finally:
        ApiKeyRateThrottle.THROTTLE_RATES = original


def test_schema_and_docs_are_public(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
