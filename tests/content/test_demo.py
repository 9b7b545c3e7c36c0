"""The demo content library (`load_demo`): the Chinese library of the field, its links and view counters
rebuilt from the demo leads' `content_viewed` events; loading it again adds nothing."""

from datetime import UTC, datetime

import pytest
from django.db.models import Sum

from content.models import AssetViewer, ConsentText, ContentAsset, MessageTemplate, TagViewer, TrackedLink
from leads import demo
from leads.demo import demo_load
from leads.models import Event

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def loaded(monkeypatch, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setattr(demo, "DEMO_LEAD_COUNT", 150)  # the full 2,000 are tests/test_demo.py's (slow)
    monkeypatch.setattr(
        demo,
        "DEMO_LOADERS",
        ["leads.demo.demo_users_load", "leads.demo.demo_leads_load", "content.demo.demo_content_load"],
    )
    return demo_load(now=NOW)


def _titles(**filters) -> list[str]:
    return [
        title.replace(" ", "")
        for title in ContentAsset.objects.filter(**filters).values_list("title", flat=True)
    ]


def test_the_demo_library_is_the_chinese_library_of_the_issue(loaded):
    whitepapers = _titles(form="whitepaper")
    assert any(title.startswith("线上获客白皮书") for title in whitepapers)
    assert any(title.startswith("B2B内容营销白皮书") for title in whitepapers)
    assert ContentAsset.objects.filter(form="whitepaper", gated=True).count() == len(whitepapers)

    cases = ContentAsset.objects.filter(form="case_study").prefetch_related("tags")
    industries = {tag.name for case in cases for tag in case.tags.all() if tag.group == "industry"}
    assert industries >= {
        "industry:制造",
        "industry:零售",
        "industry:信息科技",
        "industry:金融",
        "industry:医疗",
    }
    assert all(any(tag.group == "industry" for tag in case.tags.all()) for case in cases)

    scenarios = ContentAsset.objects.filter(slug__startswith="scenario-", title__contains="场景")
    assert scenarios.count() == 10 and scenarios.filter(form="article").count() == 10
    assert len({title for title in scenarios.values_list("title", flat=True)}) == 10
    assert ContentAsset.objects.filter(form="trial", title__contains="免费试用").exists()
    assert ContentAsset.objects.filter(form="webinar", title__startswith="直播").exists()
    assert ConsentText.objects.filter(active=True).exists()
    assert MessageTemplate.objects.filter(name="白皮书推送").exists()


def test_the_demo_leads_viewed_the_library_and_the_counters_say_so(loaded):
    slugs = set(ContentAsset.objects.values_list("slug", flat=True))
    views = Event.objects.filter(type="content_viewed")
    assert views.count() > 50
    assert {event.properties["asset"] for event in views} <= slugs
    assert AssetViewer.objects.exists() and TagViewer.objects.exists()
    assert ContentAsset.objects.aggregate(n=Sum("views"))["n"] == views.count()
    assert AssetViewer.objects.aggregate(n=Sum("views"))["n"] == views.count()
    assert TrackedLink.objects.filter(opens__gt=0).count() == AssetViewer.objects.count()
    assert TrackedLink.objects.filter(opens=0).exists()  # some links were never opened

    counts = {
        "assets": ContentAsset.objects.count(),
        "links": TrackedLink.objects.count(),
        "viewers": AssetViewer.objects.count(),
    }
    demo_load(now=NOW)
    assert counts == {
        "assets": ContentAsset.objects.count(),
        "links": TrackedLink.objects.count(),
        "viewers": AssetViewer.objects.count(),
    }
