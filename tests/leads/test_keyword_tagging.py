"""Bulk keyword tagging: preview counts, one set-based apply, idempotence, the admin actions and buttons."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse

from leads.keyword_tagging import keyword_rule_apply, keyword_rule_counts, keyword_rule_preview
from leads.models import KeywordTagRule, Lead, LeadTag
from leads.services import lead_tags_change
from tests.factories import LeadFactory, UserFactory

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=1)


@pytest.fixture
def leads(db):
    """Five leads in IT (one tagged already, one by company name in Latin letters) and four others."""
    it = [
        LeadFactory(industry="信息科技", company="甲"),
        LeadFactory(industry="软件开发", company="乙"),
        LeadFactory(industry="", company="ACME Software Ltd"),
        LeadFactory(industry="互联网科技", company="丙"),
        LeadFactory(industry="科技服务", company="丁"),
    ]
    lead_tags_change(lead=it[4], add=["industry:信息科技"], now=T0)
    lead_tags_change(lead=it[4], add=["industry:信息科技"], now=T0)
    others = [
        LeadFactory(industry="制造", company="华东精密"),
        LeadFactory(industry="工业自动化", company="北方重工"),
        LeadFactory(industry="教育", company="某某学校"),
        LeadFactory(industry="", company="", properties={"主营": "工业机器人"}),
    ]
    Lead.objects.update(updated_at=T0)
    return {"it": it, "others": others}


def _rule(**kwargs) -> KeywordTagRule:
    defaults = {"name": "IT", "field": "industry", "keywords": "科技, 软件", "tag_name": "industry:信息科技"}
    return KeywordTagRule.objects.create(**{**defaults, **kwargs})


def _tags(lead: Lead) -> dict[str, int]:
    return dict(LeadTag.objects.filter(lead=lead).values_list("tag__name", "count"))


@pytest.mark.django_db
def test_preview_counts_matching_leads_without_the_tag(leads):
    rule = _rule()

    assert keyword_rule_counts(rule=rule).matching == 4  # 信息科技, 软件开发, 互联网科技, 科技服务
    assert keyword_rule_preview(rule=rule) == 3  # 科技服务 has the tag already
    assert not LeadTag.objects.exclude(lead=leads["it"][4]).exists()  # a preview writes nothing


@pytest.mark.django_db
def test_apply_tags_every_matching_lead_once_and_is_idempotent(leads, django_assert_max_num_queries):
    rule = _rule()

    with django_assert_max_num_queries(7):  # set-based: no query per lead
        tagged = keyword_rule_apply(rule=rule, now=T1)

    assert tagged == 3
    assert LeadTag.objects.filter(first_at=T1, last_at=T1, source=f"keyword_rule:{rule.pk}").count() == 3
    assert Lead.objects.filter(updated_at__gte=T1).count() == 3
    # The pools will re-evaluate exactly the leads that got the tag.
    from leads.models import DirtyLead

    tagged_ids = set(
        LeadTag.objects.filter(source=f"keyword_rule:{rule.pk}").values_list("lead_id", flat=True)
    )
    assert tagged_ids <= set(DirtyLead.objects.values_list("lead_id", flat=True))
    rule.refresh_from_db()
    assert (rule.last_applied_at, rule.last_applied_count) == (T1, 3)
    for lead in leads["it"][:2] + leads["it"][3:4]:
        assert _tags(lead) == {"industry:信息科技": 1}
        lead.refresh_from_db()
        assert lead.updated_at == T1
        assert LeadTag.objects.get(lead=lead).source == f"keyword_rule:{rule.pk}"
    assert _tags(leads["it"][4]) == {"industry:信息科技": 2}  # already tagged: count untouched
    for lead in leads["others"] + leads["it"][2:3]:
        assert _tags(lead) == {}
        lead.refresh_from_db()
        assert lead.updated_at == T0  # leads that do not match are untouched

    assert keyword_rule_apply(rule=rule, now=T1 + timedelta(hours=1)) == 0
    assert keyword_rule_preview(rule=rule) == 0
    assert LeadTag.objects.filter(tag__name="industry:信息科技").count() == 4
    assert _tags(leads["it"][0]) == {"industry:信息科技": 1}
    rule.refresh_from_db()
    assert rule.last_applied_count == 0


@pytest.mark.django_db
def test_keywords_are_case_insensitive_and_can_read_company_or_a_property(leads):
    by_company = _rule(name="software", field="company", keywords="SOFTWARE", tag_name="industry:信息科技")
    by_property = _rule(
        name="制造", field="property", property_key="主营", keywords="制造\n工业", tag_name="industry:制造"
    )
    by_industry = _rule(name="制造2", keywords="制造，工业", tag_name="industry:制造")

    assert keyword_rule_apply(rule=by_company, now=T1) == 1
    assert _tags(leads["it"][2]) == {"industry:信息科技": 1}
    assert keyword_rule_apply(rule=by_property, now=T1) == 1
    assert _tags(leads["others"][3]) == {"industry:制造": 1}
    assert keyword_rule_apply(rule=by_industry, now=T1) == 2
    assert _tags(leads["others"][0]) == _tags(leads["others"][1]) == {"industry:制造": 1}
    assert _tags(leads["others"][2]) == {}


@pytest.mark.django_db
def test_a_rule_without_keywords_tags_nobody(leads):
    rule = _rule(keywords=" , ，")

    assert keyword_rule_preview(rule=rule) == 0
    assert keyword_rule_apply(rule=rule, now=T1) == 0
    assert LeadTag.objects.count() == 1


# --- The admin.


@pytest.fixture
def web(client, db):
    user = UserFactory(username="marketer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="leads"))
    client.force_login(user)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.django_db
def test_admin_actions_preview_then_apply(web, leads):
    rule = _rule()
    url = "/admin/leads/keywordtagrule/"

    preview = web.post(url, {"action": "preview_rules", "_selected_action": [rule.pk]}, follow=True)

    assert (
        "IT: 3 leads would get the tag industry:信息科技 (4 leads match, 1 of them have it already)."
        in _messages(preview)
    )
    assert LeadTag.objects.count() == 1

    applied = web.post(url, {"action": "apply_rules", "_selected_action": [rule.pk]}, follow=True)

    assert "IT: 3 leads tagged industry:信息科技." in _messages(applied)
    assert LeadTag.objects.count() == 4
    again = web.post(url, {"action": "apply_rules", "_selected_action": [rule.pk]}, follow=True)
    assert "IT: 0 leads tagged industry:信息科技." in _messages(again)


@pytest.mark.django_db
def test_change_page_buttons(web, leads):
    rule = _rule()
    change_url = reverse("admin:leads_keywordtagrule_change", args=[rule.pk])

    page = web.get(change_url).content.decode()
    assert reverse("admin:leads_keywordtagrule_preview", args=[rule.pk]) in page
    assert reverse("admin:leads_keywordtagrule_apply", args=[rule.pk]) in page

    preview = web.post(reverse("admin:leads_keywordtagrule_preview", args=[rule.pk]))
    assert preview.status_code == 302 and preview.url == change_url
    assert web.get(reverse("admin:leads_keywordtagrule_apply", args=[rule.pk])).status_code == 403
    assert LeadTag.objects.count() == 1

    applied = web.post(reverse("admin:leads_keywordtagrule_apply", args=[rule.pk]), follow=True)

    assert "IT: 3 leads tagged industry:信息科技." in _messages(applied)
    rule.refresh_from_db()
    assert rule.last_applied_count == 3


@pytest.mark.django_db
def test_apply_needs_change_permission(client, leads):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_keywordtagrule"))
    client.force_login(viewer)
    rule = _rule()

    assert client.post(reverse("admin:leads_keywordtagrule_preview", args=[rule.pk])).status_code == 302
    assert client.post(reverse("admin:leads_keywordtagrule_apply", args=[rule.pk])).status_code == 403
    assert LeadTag.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"field": "property", "property_key": "", "keywords": "a", "tag_name": "x:y"}, "property_key"),
        ({"field": "industry", "property_key": "", "keywords": " , ", "tag_name": "x:y"}, "keywords"),
        ({"field": "industry", "property_key": "", "keywords": "a", "tag_name": "x:"}, "tag_name"),
    ],
)
def test_rule_form_refuses_bad_rules(web, data, field):
    response = web.post("/admin/leads/keywordtagrule/add/", {"name": "r", **data})

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not KeywordTagRule.objects.exists()


@pytest.mark.django_db
def test_rule_form_normalises_the_tag_name(web):
    response = web.post(
        "/admin/leads/keywordtagrule/add/",
        {
            "name": "r",
            "field": "title",
            "property_key": "",
            "keywords": "总监",
            "tag_name": " role : 决策者 ",
        },
    )

    assert response.status_code == 302
    assert KeywordTagRule.objects.get().tag_name == "role:决策者"
