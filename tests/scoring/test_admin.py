"""The scoring model in the admin: rules validated on save, thresholds as one page, the explanation on
the lead page; and a marketer in a real Chromium changing a rule and seeing the lead's score follow."""

import io
import json
import os
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils.timezone import now as timezone_now

from leads.models import Pool
from leads.services import EventInput, event_record_bulk
from scoring.models import ScoringRule, ScoringSettings
from scoring.services import scoring_rule_save
from tests.conftest import CHROMIUM
from tests.factories import LeadFactory


def _marketer():
    user = get_user_model().objects.create_user(username="marketer", password="demo-pass-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["leads", "scoring"]))
    return user


def _rule_form(**values):
    form = {
        "name": "规则",
        "kind": "fit",
        "points": "10",
        "rule": "",
        "event_type": "",
        "where": "",
        "cap_per_day": "",
        "cap_total": "",
        "half_life_days": "",
        "description": "",
        "active": "on",
        "position": "100",
    }
    form.update(values)
    return form


@pytest.mark.django_db
def test_a_bad_scoring_rule_is_refused_with_its_path(client):
    client.force_login(_marketer())
    before = ScoringRule.objects.count()
    bad = {"all": [{"tag": "need:*"}, {"field": "title", "op": "contains", "value": ""}]}
    response = client.post(
        "/admin/scoring/scoringrule/add/", _rule_form(rule=json.dumps(bad)), HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 200
    assert "all[1].value: must be a non-empty string" in response.content.decode()
    response = client.post(
        "/admin/scoring/scoringrule/add/",
        _rule_form(kind="behaviour", event_type="content_viewed", where=json.dumps({"form": {"x": 1}})),
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert "where.form: must be a string, number, boolean or null" in response.content.decode()
    assert ScoringRule.objects.count() == before

    response = client.post(
        "/admin/scoring/scoringrule/add/",
        _rule_form(
            name="下载白皮书",
            kind="behaviour",
            event_type="content_viewed",
            where=json.dumps({"form": "whitepaper"}),
            points="12",
            cap_per_day="24",
            half_life_days="45",
        ),
    )
    assert response.status_code == 302
    rule = ScoringRule.objects.get(name="下载白皮书")
    assert (rule.where, rule.rule, rule.half_life_days) == ({"form": "whitepaper"}, None, 45)
    assert ScoringSettings.objects.get().rules_changed_at is not None


@pytest.mark.django_db
def test_thresholds_are_one_page_and_must_be_in_order(client):
    client.force_login(_marketer())
    response = client.get("/admin/scoring/scoringsettings/")
    assert response.status_code == 302 and response["Location"].endswith(
        "/admin/scoring/scoringsettings/1/change/"
    )
    form = {
        "hot_score": "30",
        "hot_min_engagement": "10",
        "warm_score": "50",
        "grade_a": "40",
        "grade_b": "25",
    }
    response = client.post("/admin/scoring/scoringsettings/1/change/", {**form, "grade_c": "10"})
    assert response.status_code == 200  # hot below warm is refused
    assert ScoringSettings.objects.get().hot_score == 80
    response = client.post(
        "/admin/scoring/scoringsettings/1/change/", {**form, "hot_score": "70", "grade_c": "10"}
    )
    assert response.status_code == 302
    assert ScoringSettings.objects.get().hot_score == 70


@pytest.mark.django_db
def test_the_lead_page_explains_the_score(client):
    Pool.objects.all().delete()
    client.force_login(_marketer())
    lead = LeadFactory(industry="制造", title="市场总监", company_size="500-999")
    now = timezone_now()
    event_record_bulk(
        items=[
            EventInput("trial_started", now - timedelta(days=1), {}, "t-1", lead.pk, None),
            EventInput(
                "content_viewed", now - timedelta(days=2), {"form": "whitepaper"}, "v-1", lead.pk, None
            ),
        ]
    )
    call_command("tick", stdout=io.StringIO())
    page = client.get(f"/admin/leads/lead/{lead.pk}/change/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    section = page[page.find('class="nurture-score"') :]
    # The default model: 目标行业 15 + 企业规模 10 + 决策层 15 fit; 试用 25 and a whitepaper read (3 + 6).
    for name in ("目标行业", "企业规模 200 人以上", "决策层职位", "开始试用", "阅读白皮书", "阅读内容"):
        assert name in section, name
    assert 'data-score="' in section


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"), reason="needs Debian's chromium at /usr/bin/chromium"
)
def test_marketer_changes_a_rule_and_the_score_follows(live_server, transactional_db, page):
    from playwright.sync_api import expect

    _marketer()
    ScoringRule.objects.all().delete()
    Pool.objects.all().delete()
    rule = scoring_rule_save(
        rule=ScoringRule(
            name="目标行业", kind="fit", points=15, rule={"field": "industry", "op": "eq", "value": "制造"}
        )
    )
    lead = LeadFactory(name="张伟", industry="制造")
    call_command("tick", stdout=io.StringIO())

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", "demo-pass-123")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/leads/lead/{lead.pk}/change/")
    score = page.locator(".nurture-score")
    expect(score).to_have_attribute("data-score", "15")
    expect(score.locator(".nurture-score-fit")).to_contain_text("目标行业")

    page.goto(f"{live_server.url}/admin/scoring/scoringrule/{rule.pk}/change/")
    page.fill("#id_points", "35")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_be_visible()
    call_command("tick", stdout=io.StringIO())  # the rule changed: everyone is rescored

    page.goto(f"{live_server.url}/admin/leads/lead/{lead.pk}/change/")
    expect(page.locator(".nurture-score")).to_have_attribute("data-score", "35")
    expect(page.locator(".nurture-score-total")).to_contain_text("35")
