"""The leads admin through the Django test client, logged in as a marketer (staff, leads permissions)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from rest_framework.test import APIClient

from leads.models import ApiKey, Event, Lead, LeadMerge, LeadTag, StageChange, Tag
from leads.services import lead_merge, lead_stage_set, lead_tags_change
from tests.factories import EventFactory, LeadFactory, TagFactory, UserFactory

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
CHANGELIST = "/admin/leads/lead/"


@pytest.fixture
def marketer(db):
    user = UserFactory(username="marketer", is_staff=True)
    user.set_password("demo-pass-123")
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="leads"))
    return user


@pytest.fixture
def web(client, marketer):
    """The admin in English (the site's language is zh-hans; the .po files come separately)."""
    client.force_login(marketer)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _result_ids(response) -> set[int]:
    return {lead.pk for lead in response.context["cl"].result_list}


# --- The lead list.


@pytest.mark.django_db
@pytest.mark.parametrize(
    "typed", ["138 0013 8000", "13800138000", "+86 138-0013-8000", "8613800138000", "(138) 0013 8000"]
)
def test_search_finds_a_phone_typed_any_usual_way(web, typed):
    lead = LeadFactory(phone="+8613800138000", name="张伟")
    LeadFactory(phone="+8613800138001")
    LeadFactory(phone="+8613900138000")

    response = web.get(CHANGELIST, {"q": typed})

    assert response.status_code == 200
    assert _result_ids(response) == {lead.pk}


@pytest.mark.django_db
def test_search_by_part_of_a_number_name_company_and_email(web):
    wei = LeadFactory(phone="+8613800138000", name="张伟", company="华东精密", email="zw@example.com")
    other = LeadFactory(phone="+8613912345678", name="李娜", company="西部物流", email="ln@example.com")

    assert _result_ids(web.get(CHANGELIST, {"q": "0013 8000"})) == {wei.pk}
    assert _result_ids(web.get(CHANGELIST, {"q": "张伟"})) == {wei.pk}
    assert _result_ids(web.get(CHANGELIST, {"q": "西部"})) == {other.pk}
    assert _result_ids(web.get(CHANGELIST, {"q": "ZW@Example.com"})) == {wei.pk}


@pytest.mark.django_db
def test_filters_by_tag_stage_owner_and_source(web):
    sdr = UserFactory(username="sdr1")
    tagged = LeadFactory(stage="mql", owner=sdr, source="展会")
    LeadFactory(stage="mil", source="官网表单")
    lead_tags_change(lead=tagged, add=["industry:制造"], now=T0)
    tag = Tag.objects.get(name="industry:制造")

    assert _result_ids(web.get(CHANGELIST, {"tag": tag.pk})) == {tagged.pk}
    assert _result_ids(web.get(CHANGELIST, {"stage": "mql"})) == {tagged.pk}
    assert _result_ids(web.get(CHANGELIST, {"owner__id__exact": sdr.pk})) == {tagged.pk}
    assert _result_ids(web.get(CHANGELIST, {"source": "展会"})) == {tagged.pk}


@pytest.mark.django_db
def test_changelist_queries_do_not_grow_with_leads(web, django_assert_max_num_queries):
    owners = [UserFactory(username=f"owner{i}") for i in range(5)]
    tags = [TagFactory(name=f"need:需求{i}") for i in range(4)]
    leads = [LeadFactory(owner=owners[i % 5]) for i in range(60)]
    LeadTag.objects.bulk_create(
        [
            LeadTag(lead=lead, tag=tag, count=i % 3 + 1, first_at=T0, last_at=T0)
            for i, lead in enumerate(leads)
            for tag in tags[: i % 4 + 1]
        ]
    )

    with django_assert_max_num_queries(12):
        response = web.get(CHANGELIST, {"all": ""})

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 60
    content = response.content.decode()
    assert "need:需求0" in content
    assert owners[0].username in content


# --- The lead page.


@pytest.mark.django_db
def test_lead_page_shows_tags_with_counts_and_the_timeline_newest_first(web, marketer):
    lead = LeadFactory(name="王芳", phone="+8613800138000")
    lead_tags_change(lead=lead, add=["industry:制造"], now=T0)
    lead_tags_change(lead=lead, add=["industry:制造", "need:全渠道获客"], now=T0)
    EventFactory(lead=lead, type="registered", occurred_at=T0, properties={})
    EventFactory(
        lead=lead, type="content_viewed", occurred_at=T0 + timedelta(days=1), properties={"title": "白皮书A"}
    )
    lead_stage_set(lead=lead, stage="sql", reason="预算已确认", by=marketer, now=T0 + timedelta(days=2))
    twin = LeadFactory(email="wf@example.com")
    twin_id = twin.pk
    lead_merge(survivor=lead, merged=twin, why="same person", now=T0 + timedelta(days=3))

    response = web.get(reverse("admin:leads_lead_change", args=[lead.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    inline = response.context["inline_admin_formsets"][0]
    assert {(f.form.instance.tag.name, f.form.instance.count) for f in inline} == {
        ("industry:制造", 2),
        ("need:全渠道获客", 1),
    }
    positions = [
        content.index(text)
        for text in (f"#{twin_id} merged in: same person", "rl → sql (预算已确认)", "content_viewed: 白皮书A")
    ]
    assert positions == sorted(positions)  # newest first
    assert content.index("content_viewed: 白皮书A") < content.index(">registered<")
    assert "marketer" in content  # who moved the stage


@pytest.mark.django_db
def test_editing_the_stage_records_a_stage_change_and_identities_are_normalised(web, marketer):
    lead = LeadFactory(name="赵磊", phone="+8613800138000", stage="mil")
    url = reverse("admin:leads_lead_change", args=[lead.pk])
    form = web.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(
        {
            "phone": "139 0013 9000",
            "email": " ZL@Example.COM ",
            "stage": "mql",
            "owner": "",
            "properties": "{}",
            "tags_add": "industry:制造, need:全渠道获客",
            "lead_tags-TOTAL_FORMS": "0",
            "lead_tags-INITIAL_FORMS": "0",
            "lead_tags-MIN_NUM_FORMS": "0",
            "lead_tags-MAX_NUM_FORMS": "1000",
        }
    )
    data = {key: value for key, value in data.items() if value is not False}

    response = web.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    lead.refresh_from_db()
    assert (lead.phone, lead.email, lead.stage) == ("+8613900139000", "zl@example.com", "mql")
    change = StageChange.objects.get(lead=lead)
    assert (change.from_stage, change.to_stage, change.by) == ("mil", "mql", marketer)
    assert set(lead.lead_tags.values_list("tag__name", flat=True)) == {"industry:制造", "need:全渠道获客"}


@pytest.mark.django_db
def test_adding_a_lead_normalises_its_phone_and_stamps_its_tags(web):
    response = web.post(
        reverse("admin:leads_lead_add"),
        {
            "name": "孙丽",
            "phone": "138 0013 8000",
            "stage": "rl",
            "properties": "{}",
            "tags_add": "industry:制造，need:私域运营",
            "lead_tags-TOTAL_FORMS": "0",
            "lead_tags-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    lead = Lead.objects.get()
    assert (lead.name, lead.phone) == ("孙丽", "+8613800138000")
    assert dict(lead.lead_tags.values_list("tag__name", "source")) == {
        "industry:制造": "admin",
        "need:私域运营": "admin",
    }
    assert _result_ids(web.get(CHANGELIST, {"q": f"#{lead.pk}"})) == {lead.pk}


@pytest.mark.django_db
def test_a_bad_phone_is_refused_on_the_lead_form(web):
    response = web.post(
        reverse("admin:leads_lead_add"), {"phone": "12345", "stage": "rl", "properties": "{}"}
    )

    assert response.status_code == 200
    assert "phone" in response.context["adminform"].form.errors
    assert not Lead.objects.exists()


# --- Manual merge.


@pytest.mark.django_db
def test_merge_action_confirms_then_merges_into_the_older_lead(web, marketer):
    older = LeadFactory(name="刘洋", phone="+8613800138000", email=None)
    newer = LeadFactory(name="", phone=None, email="ly@example.com", company="新公司")
    lead_tags_change(lead=older, add=["industry:制造"], now=T0)
    lead_tags_change(lead=newer, add=["industry:制造"], now=T0)
    lead_tags_change(lead=newer, add=["industry:制造", "need:全渠道获客"], now=T0)
    EventFactory(lead=older, type="registered", occurred_at=T0)
    moved = EventFactory(lead=newer, type="content_viewed", occurred_at=T0)
    newer_id = newer.pk
    selection = {"action": "merge_leads", "_selected_action": [newer.pk, older.pk]}

    confirm = web.post(CHANGELIST, selection)

    assert confirm.status_code == 200
    assert confirm.context["survivor"] == older
    assert confirm.context["merged"] == newer
    content = confirm.content.decode()
    assert "ly@example.com" in content and "+8613800138000" in content
    assert Lead.objects.count() == 2  # nothing merged before the confirmation

    done = web.post(CHANGELIST, {**selection, "post": "yes"})

    assert done.status_code == 302
    assert done.url == reverse("admin:leads_lead_change", args=[older.pk])
    assert not Lead.objects.filter(pk=newer_id).exists()
    older.refresh_from_db()
    assert (older.name, older.email, older.company) == ("刘洋", "ly@example.com", older.company)
    moved.refresh_from_db()
    assert moved.lead_id == older.pk
    counts = dict(older.lead_tags.values_list("tag__name", "count"))
    assert counts == {"industry:制造": 3, "need:全渠道获客": 1}
    merge = LeadMerge.objects.get(merged_id=newer_id)
    assert (merge.survivor_id, merge.by, merge.why) == (older.pk, marketer, "merged by hand in the admin")
    assert merge.identities == {"email": "ly@example.com"}
    assert f"Lead #{newer_id} was merged into #{older.pk}." in _messages(done)
    old_page = web.get(reverse("admin:leads_lead_change", args=[newer_id]))
    assert old_page.status_code == 302 and old_page.url == done.url


@pytest.mark.django_db
@pytest.mark.parametrize("how_many", [1, 3])
def test_merge_action_needs_exactly_two_leads(web, how_many):
    leads = [LeadFactory() for _ in range(how_many)]

    response = web.post(
        CHANGELIST, {"action": "merge_leads", "_selected_action": [lead.pk for lead in leads]}, follow=True
    )

    assert "Select exactly two leads to merge." in _messages(response)
    assert Lead.objects.count() == how_many
    assert not LeadMerge.objects.exists()


# --- Tags, audit tables.


@pytest.mark.django_db
def test_tag_list_counts_leads_without_a_query_per_tag(web, django_assert_max_num_queries):
    tags = [TagFactory(name=f"topic:话题{i}") for i in range(30)]
    leads = [LeadFactory() for _ in range(5)]
    LeadTag.objects.bulk_create(
        [
            LeadTag(lead=lead, tag=tag, count=2, first_at=T0, last_at=T0)
            for i, tag in enumerate(tags)
            for lead in leads[: i % 5 + 1]
        ]
    )

    with django_assert_max_num_queries(10):
        response = web.get("/admin/leads/tag/", {"all": ""})

    rows = {tag.name: (tag.lead_count, tag.stamp_count) for tag in response.context["cl"].result_list}
    assert rows["topic:话题0"] == (1, 2)
    assert rows["topic:话题4"] == (5, 10)


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["event", "stagechange", "leadmerge", "tag", "apikey", "keywordtagrule"])
def test_every_list_and_add_page_opens(web, marketer, model):
    lead = LeadFactory()
    EventFactory(lead=lead)
    lead_stage_set(lead=lead, stage="sql", by=marketer, now=T0)
    lead_merge(survivor=lead, merged=LeadFactory(), why="same person", now=T0)

    assert web.get(f"/admin/leads/{model}/").status_code == 200
    add = web.get(f"/admin/leads/{model}/add/")
    read_only = model in {"event", "stagechange", "leadmerge"}
    assert add.status_code == (403 if read_only else 200)


@pytest.mark.django_db
def test_audit_rows_are_read_only(web, marketer):
    lead = LeadFactory()
    event = EventFactory(lead=lead, type="message_in")
    change = lead_stage_set(lead=lead, stage="sql", by=marketer, now=T0)
    lead_merge(survivor=lead, merged=LeadFactory(email="x@example.com"), why="same person", now=T0)
    merge = LeadMerge.objects.get()

    for url in (
        reverse("admin:leads_event_change", args=[event.pk]),
        reverse("admin:leads_stagechange_change", args=[change.pk]),
        reverse("admin:leads_leadmerge_change", args=[merge.pk]),
    ):
        page = web.get(url)
        assert page.status_code == 200
        assert page.context["has_change_permission"] is False
        web.post(url, {})
    assert Event.objects.filter(pk=event.pk, type="message_in").exists()
    merges = web.get("/admin/leads/leadmerge/", {"q": str(merge.merged_id)})
    assert [m.pk for m in merges.context["cl"].result_list] == [merge.pk]
    assert "x@example.com" in merges.content.decode()
    assert web.get("/admin/leads/event/", {"type": "message_in"}).context["cl"].result_count == 1


# --- API keys.


@pytest.mark.django_db
def test_adding_an_api_key_shows_it_once_and_stores_the_digest(web):
    response = web.post(
        "/admin/leads/apikey/add/", {"name": "crm-sync", "scopes": ["read", "write"]}, follow=True
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(name="crm-sync")
    assert key.scopes == ["read", "write"]
    shown = [m for m in _messages(response) if "not shown again" in m]
    assert len(shown) == 1
    plain = shown[0].split("<code")[1].split(">", 1)[1].split("</code>")[0]
    assert plain.startswith(key.prefix)
    assert plain not in (key.digest, key.prefix) and len(key.digest) == 64
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    assert api.get("/api/v1/leads/").status_code == 200

    page = web.get(reverse("admin:leads_apikey_change", args=[key.pk])).content.decode()
    assert plain not in page and key.digest not in page


@pytest.mark.django_db
def test_revoke_action_revokes_the_selected_keys(web):
    web.post("/admin/leads/apikey/add/", {"name": "old", "scopes": ["read"]})
    web.post("/admin/leads/apikey/add/", {"name": "kept", "scopes": ["read"]})
    old = ApiKey.objects.get(name="old")

    response = web.post(
        "/admin/leads/apikey/", {"action": "revoke_keys", "_selected_action": [old.pk]}, follow=True
    )

    assert "1 API key revoked." in _messages(response)
    old.refresh_from_db()
    assert old.revoked_at is not None
    assert ApiKey.objects.get(name="kept").revoked_at is None
    listing = web.get("/admin/leads/apikey/").content.decode()
    assert old.prefix in listing
