"""The demo data set (`load_demo`): its shape, its users, and that loading it again adds nothing."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count, Sum

from leads import demo
from leads.demo import DEMO_PASSWORD, DEMO_USERS, DemoContext, demo_load
from leads.identity import normalize_phone
from leads.models import Event, Lead, LeadTag, Stage, StageChange, Tag

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _snapshot() -> dict[str, object]:
    return {
        "leads": Lead.objects.count(),
        "stages": dict(Lead.objects.values_list("stage").annotate(n=Count("id"))),
        "events": Event.objects.count(),
        "tags": Tag.objects.count(),
        "lead_tags": LeadTag.objects.count(),
        "tag_stamps": LeadTag.objects.aggregate(n=Sum("count"))["n"],
        "stage_changes": StageChange.objects.count(),
        "users": get_user_model().objects.count(),
        "groups": dict(get_user_model().objects.values_list("username").annotate(n=Count("groups"))),
    }


# One test for the full-size set: loading it takes a few seconds on PostgreSQL, so it is loaded once.
@pytest.mark.slow
def test_demo_load_builds_a_chinese_b2b_funnel_and_a_reload_adds_nothing():
    counts = demo_load(now=NOW)

    assert 1900 <= Lead.objects.count() <= 2100
    assert counts["leads_created"] == counts["leads"] == Lead.objects.count()
    assert Event.objects.count() > 5 * Lead.objects.count()
    phones = list(Lead.objects.exclude(phone=None).values_list("phone", flat=True))
    assert len(phones) > 1000
    assert all(
        phone.startswith("+86") and len(phone) == 14 and normalize_phone(phone) == phone for phone in phones
    )
    stages = dict(Lead.objects.values_list("stage").annotate(n=Count("id")))
    assert stages[Stage.RL] + stages[Stage.MIL] > 0.6 * sum(stages.values())
    assert all(stages.get(stage, 0) > 10 for stage in Stage.values)
    for outcome in (Stage.WON, Stage.LOST):
        changes = StageChange.objects.filter(to_stage=outcome)
        assert changes.count() == stages[outcome]
        assert not changes.filter(amount=None).exists() and not changes.filter(reason="").exists()
    assert (
        Lead.objects.filter(owner__username="sdr1").exists()
        and Lead.objects.filter(owner__username="sdr2").exists()
    )
    assert Lead.objects.filter(wecom_external_userid__startswith="wm").count() > 200
    assert {"industry", "need", "topic", "form"} <= set(Tag.objects.values_list("group", flat=True))
    assert Tag.objects.filter(name="form:白皮书").exists()
    times = Event.objects.values_list("occurred_at", flat=True)
    assert NOW - timedelta(days=91) < min(times) and max(times) <= NOW
    assert NOW - timedelta(days=91) < min(Lead.objects.values_list("created_at", flat=True))
    assert set(Event.objects.values_list("type", flat=True)) >= {
        "registered",
        "form_submitted",
        "wecom_added",
        "message_in",
        "message_out",
        "content_viewed",
        "link_clicked",
        "webinar_registered",
        "webinar_attended",
        "trial_started",
        "email_opened",
    }
    viewed = Event.objects.filter(type="content_viewed").first()
    assert {"asset", "title", "form"} <= set(viewed.properties)
    first = _snapshot()

    again = demo_load(now=NOW + timedelta(hours=20))

    assert _snapshot() == first
    assert again["leads_created"] == again["events_created"] == again["stage_changes_created"] == 0
    assert again["lead_tags_stamped"] == again["users_created"] == 0


def test_demo_users_log_in_to_the_admin(client, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_LOADERS", ["leads.demo.demo_users_load"])
    demo_load(now=NOW)
    demo_load(now=NOW)

    User = get_user_model()
    assert User.objects.filter(username__in=DEMO_USERS).count() == 4
    for username, (group, _, _) in DEMO_USERS.items():
        user = User.objects.get(username=username)
        assert user.is_staff and list(user.groups.values_list("name", flat=True)) == [group]
        client.logout()
        response = client.post(
            "/admin/login/?next=/admin/", {"username": username, "password": DEMO_PASSWORD, "next": "/admin/"}
        )
        assert response.status_code == 302 and response["Location"] == "/admin/", username
        assert client.get("/admin/leads/lead/").status_code == 200, username

    marketer, sdr, manager = (User.objects.get(username=name) for name in ("marketer", "sdr1", "manager"))
    assert marketer.has_perms(
        ["leads.delete_lead", "leads.add_keywordtagrule", "django_celery_beat.add_periodictask"]
    )
    assert manager.has_perms(["leads.add_lead", "leads.delete_event"])
    assert not manager.has_perm("django_celery_beat.add_periodictask")
    assert sdr.has_perms(["leads.view_lead", "leads.change_lead"])
    assert not sdr.has_perm("leads.delete_lead") and not sdr.has_perm("leads.view_apikey")


def _later_loader(ctx: DemoContext) -> dict[str, int]:
    return {"later_loader_saw_users": get_user_model().objects.filter(username__in=DEMO_USERS).count()}


def test_later_issues_append_their_loaders(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_LOADERS", ["leads.demo.demo_users_load", f"{__name__}._later_loader"])

    counts = demo_load(now=NOW)

    assert counts["users"] == counts["later_loader_saw_users"] == 4
