"""Content analytics: "became MQL / SQL within 30 days" counts a viewer whose lead reached the stage or
beyond within 30 days after any of its views (of the asset, or of any asset with the tag)."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from content.models import ContentAsset
from content.selectors import content_asset_stats, content_tag_stats
from content.services import content_view_record
from leads.services import lead_stage_set
from leads.tagging import tags_get_or_create
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def _asset(slug):
    asset = ContentAsset.objects.create(
        slug=slug, title=slug, form="whitepaper", awareness="problem_aware", funnel="tofu"
    )
    asset.tags.set(tags_get_or_create(names=["need:线索培育"]).values())
    return asset


def _story(asset, views, stages):
    lead = LeadFactory(stage="mil")
    for day in views:
        content_view_record(asset=asset, lead=lead, now=T0 + timedelta(days=day))
    for stage, day in stages:
        lead_stage_set(lead=lead, stage=stage, now=T0 + timedelta(days=day))
    return lead


def test_conversions_count_from_any_view_and_mql_includes_leads_that_went_straight_to_sql():
    paper, case = _asset("paper"), _asset("case")
    _story(paper, [0, 60], [("mql", 65)])  # 65 days after the first view, 5 after the second
    _story(paper, [0], [("sql", 10)])  # straight to SQL: MQL or beyond
    _story(paper, [0], [("won", 5)])  # straight to won: MQL and SQL or beyond
    gap = _story(paper, [0, 100], [("mql", 50)])  # 50 days after one view, before the next
    _story(paper, [0], [("mql", -5)])  # MQL before viewing
    _story(paper, [0], [("mql", 31)])  # too late
    _story(paper, [0], [("recycled", 3)])  # moved, but not up
    content_view_record(asset=case, lead=gap, now=T0 + timedelta(days=45))  # 5 days before its MQL

    stats = {asset.slug: asset for asset in content_asset_stats()}
    assert (stats["paper"].mql_after, stats["paper"].sql_after) == (3, 2)
    assert (stats["case"].mql_after, stats["case"].sql_after) == (1, 0)
    tag = content_tag_stats().get(name="need:线索培育")
    assert (tag.unique_viewers, tag.mql_after, tag.sql_after) == (7, 4, 2)
