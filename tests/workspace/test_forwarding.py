"""Inbox notifications forwarded to the SDR's WeCom as application messages, against the fake WeCom."""

from __future__ import annotations

import pytest
import time_machine

from tests.channels.conftest import fake_wecom  # noqa: F401  (the fixture)
from tests.workspace.conftest import at, hot_lead
from workspace.models import Notification, SdrProfile
from workspace.services import lead_claim, workspace_settings_get, workspace_tick

pytestmark = pytest.mark.django_db


@pytest.fixture
def wecom_app(fake_wecom, settings):  # noqa: F811
    settings.WECOM_AGENT_ID = fake_wecom.agent_id
    settings.WECOM_AGENT_SECRET = fake_wecom.agent_secret
    fake_wecom.add_staff("chenhaoran")
    s = workspace_settings_get()
    s.forward = "wecom"
    s.save()
    return fake_wecom


def claim(lead, sdr):
    with time_machine.travel(at("2030-01-07 08:50"), tick=False):
        lead_claim(lead=lead, sdr=sdr)


def test_a_new_assignment_reaches_the_sdrs_wecom_once(wecom_app, sdr_a):
    SdrProfile.objects.create(user=sdr_a, wecom_userid="chenhaoran")
    lead = hot_lead(name="吴磊", company="远景制造")
    claim(lead, sdr_a)
    assert workspace_tick(at("2030-01-07 09:00"))["forwarded"] == 1
    workspace_tick(at("2030-01-07 09:01"))  # nothing pending: nothing sent again
    inbox = wecom_app.inbox("chenhaoran")
    assert len(inbox) == 1 and "吴磊" in inbox[0]
    assert Notification.objects.get(kind="assigned").forward_state == "sent"


def test_an_sdr_without_a_wecom_userid_is_marked_failed_not_retried(wecom_app, sdr_a):
    claim(hot_lead(), sdr_a)
    workspace_tick(at("2030-01-07 09:00"))
    n = Notification.objects.get(kind="assigned")
    assert (n.forward_state, n.forward_error) == ("failed", "no WeCom UserID")
    assert wecom_app.app_messages == []


def test_a_busy_wecom_is_tried_again_next_tick(wecom_app, sdr_a):
    SdrProfile.objects.create(user=sdr_a, wecom_userid="chenhaoran")
    claim(hot_lead(), sdr_a)
    wecom_app.fail("message/send", 45009)
    workspace_tick(at("2030-01-07 09:00"))
    assert Notification.objects.get(kind="assigned").forward_state == "pending"
    workspace_tick(at("2030-01-07 09:01"))
    assert Notification.objects.get(kind="assigned").forward_state == "sent"
    assert len(wecom_app.inbox("chenhaoran")) == 1
