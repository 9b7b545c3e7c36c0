"""Scores through the API: the explanation of a lead's score, score and temperature on the lead, the
temperature filter; events posted to the API move the score at the next tick."""

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from rest_framework.test import APIClient

from leads.models import Pool
from scoring.models import ScoringRule, ScoringSettings
from scoring.services import scoring_rule_save, scoring_settings_save
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


@pytest.fixture(autouse=True)
def _model(db):
    ScoringRule.objects.all().delete()
    Pool.objects.all().delete()
    scoring_settings_save(
        values=ScoringSettings(
            hot_score=40, warm_score=15, hot_min_engagement=10, grade_a=30, grade_b=20, grade_c=10
        )
    )
    scoring_rule_save(
        rule=ScoringRule(
            name="目标行业", kind="fit", points=15, rule={"field": "industry", "op": "eq", "value": "制造"}
        )
    )
    scoring_rule_save(
        rule=ScoringRule(
            name="阅读白皮书",
            kind="behaviour",
            event_type="content_viewed",
            where={"form": "whitepaper"},
            points=10,
            cap_per_day=10,
            half_life_days=30,
        )
    )
    scoring_rule_save(
        rule=ScoringRule(name="开始试用", kind="behaviour", event_type="trial_started", points=20)
    )


def _tick(at):
    call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def test_events_posted_to_the_api_make_a_lead_hot_and_the_explanation_says_why(api):
    lead = LeadFactory(industry="制造")
    cold = LeadFactory(industry="教育")
    events = [
        {
            "event_id": "wp-1",
            "lead": lead.pk,
            "type": "content_viewed",
            "occurred_at": (NOW - timedelta(days=30)).isoformat(),
            "properties": {"form": "whitepaper", "asset": "wp-online-acquisition"},
        },
        {
            "event_id": "wp-2",
            "lead": lead.pk,
            "type": "content_viewed",
            "occurred_at": (NOW - timedelta(days=30, hours=-2)).isoformat(),
            "properties": {"form": "whitepaper"},
        },
        {"event_id": "trial-1", "lead": lead.pk, "type": "trial_started", "occurred_at": NOW.isoformat()},
    ]
    assert api.post("/api/v1/events/", events, format="json").status_code == 200
    _tick(NOW + timedelta(minutes=1))

    body = api.get(f"/api/v1/leads/{lead.pk}/").json()
    assert (body["score"], body["temperature"]) == (40, "hot")
    hot = api.get("/api/v1/leads/", {"temperature": "hot"}).json()["results"]
    assert [item["id"] for item in hot] == [lead.pk]
    assert api.get(f"/api/v1/leads/{cold.pk}/").json()["temperature"] == "cold"

    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        explanation = api.get(f"/api/v1/leads/{lead.pk}/score/").json()
    assert explanation["score"] == 40 and explanation["stored"]["score"] == 40
    assert (explanation["fit"], explanation["grade"], explanation["temperature"]) == (15, "C", "hot")
    assert [rule["name"] for rule in explanation["fit_rules"]] == ["目标行业"]
    by_name = {rule["name"]: rule for rule in explanation["behaviour_rules"]}
    # Two whitepaper views on one day, capped at 10 points, half of them left 30 days on.
    assert by_name["阅读白皮书"]["events"] == 1
    assert by_name["阅读白皮书"]["points"] == 10
    assert by_name["阅读白皮书"]["decayed"] == pytest.approx(5.0, abs=0.01)
    assert by_name["开始试用"]["decayed"] == 20
    assert explanation["entries"][0]["event_type"] == "trial_started"
    assert explanation["thresholds"]["hot_score"] == 40


def test_score_explanation_errors(api, make_client):
    lead = LeadFactory(industry="教育")
    assert api.get("/api/v1/leads/999999999/score/").status_code == 404
    assert APIClient().get(f"/api/v1/leads/{lead.pk}/score/").status_code == 401
    reader = make_client(scopes=("read",))
    body = reader.get(f"/api/v1/leads/{lead.pk}/score/").json()
    assert (body["score"], body["stored"], body["behaviour_rules"]) == (0, None, [])
