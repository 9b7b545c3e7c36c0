def test_upsert_then_read(api):
    r = api.post(
        "/api/v1/leads/upsert/",
        {"phone": "138 0013 8000", "name": "张伟", "tags": ["industry:制造"]},
        format="json",
    )
    assert r.status_code == 201, r.content
    lead = r.json()
    assert lead["phone"] == "+8613800138000"
    assert lead["tags"] == ["industry:制造"]
    r = api.post("/api/v1/leads/upsert/", {"phone": "8613800138000", "company": "华东精密"}, format="json")
    assert r.status_code == 200
    assert r.json()["id"] == lead["id"]
    assert r.json()["company"] == "华东精密"
