"""Next best content: by the lead's awareness stage, not what it was sent or viewed, low friction early,
value later, shared tags; the answer says which signals counted."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from content.models import ContentAsset
from content.selectors import content_recommend
from content.services import content_view_record, link_get_or_create
from leads.services import EventInput, event_record_bulk, lead_tags_change
from leads.tagging import tags_get_or_create
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def _asset(slug, awareness, friction, proximity, tags=(), form="article"):
    asset = ContentAsset.objects.create(
        slug=slug,
        title=slug,
        form=form,
        awareness=awareness,
        funnel="tofu",
        friction=friction,
        value_proximity=proximity,
    )
    asset.tags.set(tags_get_or_create(names=tags).values())
    return asset


@pytest.fixture
def library():
    return {
        "intro": _asset("intro", "problem_aware", 1, 2),
        "report": _asset("report", "problem_aware", 3, 2),
        "scenario-private": _asset("scenario-private", "solution_aware", 1, 3, ["need:私域运营"]),
        "scenario-acq": _asset("scenario-acq", "solution_aware", 1, 3, ["need:全渠道获客"]),
        "trial": _asset("trial", "product_aware", 4, 5, form="trial"),
        "demo": _asset("demo", "product_aware", 5, 4, form="demo"),
    }


def test_a_lead_without_needs_gets_low_friction_problem_content(library):
    lead = LeadFactory()
    pick = content_recommend(lead=lead, now=NOW)
    assert (pick.awareness, pick.asset.slug) == ("problem_aware", "intro")
    assert pick.signals[0] == "no need tag yet: learning about the problem"
    assert "friction 1/5, value proximity 2/5" in pick.signals
    assert [a["asset"] for a in pick.alternatives][:1] == ["report"]


def test_need_tags_make_it_solution_aware_and_matching_tags_win(library):
    lead = LeadFactory()
    lead_tags_change(lead=lead, add=["need:私域运营"], now=NOW)
    pick = content_recommend(lead=lead, now=NOW)
    assert (pick.awareness, pick.asset.slug) == ("solution_aware", "scenario-private")
    assert any("shares 1 tag(s) with the lead: need:私域运营" in s for s in pick.signals)


def test_trial_events_or_sql_make_it_product_aware_and_value_wins(library):
    lead = LeadFactory()
    event_record_bulk(items=[EventInput("trial_started", NOW, {}, "t1", lead.pk, None)])
    pick = content_recommend(lead=lead, now=NOW)
    assert (pick.awareness, pick.asset.slug) == ("product_aware", "trial")
    assert pick.signals[0] == "trial_started: looking at the product"
    sql = LeadFactory(stage="sql")
    assert content_recommend(lead=sql, now=NOW).awareness == "product_aware"


def test_what_was_sent_or_viewed_is_left_out(library):
    lead = LeadFactory()
    link_get_or_create(asset=library["intro"], lead=lead)
    content_view_record(asset=library["report"], lead=lead, now=NOW)
    pick = content_recommend(lead=lead, now=NOW)
    assert pick.asset.slug not in ("intro", "report")
    assert "2 asset(s) already sent or viewed: left out" in pick.signals
    # Nothing left at its own stage: one stage ahead.
    assert pick.asset.awareness == "solution_aware"
    assert any(s.startswith("one stage ahead") for s in pick.signals)
    for asset in library.values():
        link_get_or_create(asset=asset, lead=lead)
    empty = content_recommend(lead=lead, now=NOW)
    assert empty.asset is None and "nothing left to recommend" in empty.signals
