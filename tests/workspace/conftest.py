"""People and leads of the workspace tests: two SDRs, a manager, a marketer, hot leads."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group

from leads.models import Lead
from tests.factories import LeadFactory, UserFactory

SHANGHAI = ZoneInfo("Asia/Shanghai")
PASSWORD = "demo-pass-123"


def at(text: str) -> datetime:
    """A Shanghai wall-clock time: at("2026-12-07 10:00") is a Monday morning."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def member(username: str, group: str, **extra):
    user = UserFactory(username=username, first_name=extra.pop("first_name", ""), **extra)
    user.set_password(PASSWORD)
    user.save()
    user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def sdr_a(db):
    return member("sdr_a", "sdr", first_name="浩然")


@pytest.fixture
def sdr_b(db):
    return member("sdr_b", "sdr", first_name="思琪")


@pytest.fixture
def manager(db):
    return member("boss", "sdr_manager", first_name="建国")


@pytest.fixture
def marketer(db):
    return member("mkt", "marketer")


def hot_lead(**fields) -> Lead:
    fields.setdefault("temperature", "hot")
    fields.setdefault("score", 90)
    fields.setdefault("stage", "mql")
    return LeadFactory(**fields)


@pytest.fixture
def client_for(client):
    """`client_for(user)`: a test client logged in as that user (a fresh one each call)."""
    from django.test import Client

    def make(user):
        c = Client()
        c.force_login(user)
        return c

    return make
