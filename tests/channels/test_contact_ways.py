"""Channel QR codes (渠道活码) in the admin, synced with a fake WeCom over HTTP; the WeCom staff and the
inbound payloads admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils.timezone import now as timezone_now

from channels.models import ContactWay, InboundPayload, WecomMember
from leads.models import Lead
from leads.services import lead_upsert
from tests.channels.test_wecom_callback import eager_fixture  # noqa: F401
from tests.fakeserver import Request

ADD = reverse("admin:nurture_channels_contactway_add")
LIST = reverse("admin:nurture_channels_contactway_changelist")


def form(**fields):
    data = {
        "name": "官网首页活码",
        "state": "web-home",
        "source": "官网活码",
        "campaign": "",
        "user_ids_text": "zhangsan",
        "skip_verify": "on",
        "tags_text": "channel:官网, 意向:高",
        "welcome_text": "",
        "active": "on",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def change_url(way: ContactWay) -> str:
    return reverse("admin:nurture_channels_contactway_change", args=[way.pk])


@pytest.fixture
def staff(fake_wecom):
    for userid in ("zhangsan", "lisi"):
        fake_wecom.members.add(userid)
    return fake_wecom


@pytest.mark.django_db
def test_creating_a_qr_code_in_the_admin_creates_it_in_wecom(admin_client, staff):
    answer = admin_client.post(ADD, form(), follow=True)
    assert answer.status_code == 200
    way = ContactWay.objects.get()
    [call] = staff.calls("externalcontact/add_contact_way")
    assert call.json == {
        "type": 1,
        "scene": 2,
        "remark": "官网首页活码",
        "skip_verify": True,
        "state": "web-home",
        "user": ["zhangsan"],
    }
    assert way.config_id and way.config_id in staff.contact_ways
    assert way.qr_code == f"https://wework.qpic.cn/wwpic/{way.config_id}/0"
    assert way.tags == ["channel:官网", "意向:高"] and way.error == "" and way.synced_at is not None
    page = admin_client.get(LIST).content.decode()
    assert way.qr_code in page and "web-home" in page


@pytest.mark.django_db
def test_several_staff_make_a_multi_member_code(admin_client, staff):
    admin_client.post(ADD, form(user_ids_text="zhangsan, lisi", skip_verify=None))
    [call] = staff.calls("externalcontact/add_contact_way")
    assert call.json["type"] == 2 and call.json["user"] == ["zhangsan", "lisi"]
    assert call.json["skip_verify"] is False


@pytest.mark.django_db
def test_editing_updates_the_code_in_wecom(admin_client, staff):
    admin_client.post(ADD, form())
    way = ContactWay.objects.get()
    admin_client.post(change_url(way), form(state="web-home-2", skip_verify=None))
    [update] = staff.calls("externalcontact/update_contact_way")
    assert update.json["config_id"] == way.config_id
    assert update.json["state"] == "web-home-2" and update.json["skip_verify"] is False
    assert staff.contact_ways[way.config_id]["state"] == "web-home-2"
    assert len(staff.calls("externalcontact/add_contact_way")) == 1
    # Saving without a change reaches WeCom no more.
    admin_client.post(change_url(way), form(state="web-home-2", skip_verify=None))
    assert len(staff.calls("externalcontact/update_contact_way")) == 1


@pytest.mark.django_db
def test_going_from_one_member_to_several_recreates_the_code(admin_client, staff):
    def get_contact_way(request: Request) -> dict:
        way = staff.contact_ways.get(request.json["config_id"])
        if way is None:
            return {"errcode": 40058, "errmsg": "invalid config_id"}
        return {"errcode": 0, "errmsg": "ok", "contact_way": {"config_id": request.json["config_id"], **way}}

    staff.handler("externalcontact/get_contact_way", get_contact_way)
    admin_client.post(ADD, form())
    first = ContactWay.objects.get().config_id
    admin_client.post(change_url(ContactWay.objects.get()), form(user_ids_text="zhangsan,lisi"))
    way = ContactWay.objects.get()
    assert [c.json for c in staff.calls("externalcontact/del_contact_way")] == [{"config_id": first}]
    assert way.config_id != first and staff.contact_ways[way.config_id]["type"] == 2
    assert not staff.calls("externalcontact/update_contact_way")


@pytest.mark.django_db
def test_deactivating_or_deleting_removes_the_code_from_wecom(admin_client, staff):
    admin_client.post(ADD, form())
    way = ContactWay.objects.get()
    config_id = way.config_id
    admin_client.post(change_url(way), form(active=None))
    way.refresh_from_db()
    assert way.config_id == "" and way.qr_code == "" and config_id not in staff.contact_ways
    admin_client.post(change_url(way), form())  # active again: a new code
    way.refresh_from_db()
    assert way.config_id in staff.contact_ways
    delete = reverse("admin:nurture_channels_contactway_delete", args=[way.pk])
    admin_client.post(delete, {"post": "yes"})
    assert not ContactWay.objects.exists() and not staff.contact_ways


@pytest.mark.django_db
def test_a_refusal_by_wecom_is_shown_and_kept(admin_client, staff):
    answer = admin_client.post(ADD, form(user_ids_text="nobody"), follow=True)
    assert answer.status_code == 200
    shown = [str(m) for m in answer.context["messages"]]
    assert any("60111" in m for m in shown)
    way = ContactWay.objects.get()
    assert way.config_id == "" and "60111" in way.error


@pytest.mark.django_db
def test_without_wecom_the_code_is_saved_and_shown_not_configured(admin_client, settings):
    settings.WECOM_CORP_ID = settings.WECOM_SECRET = ""
    answer = admin_client.post(ADD, form(), follow=True, HTTP_ACCEPT_LANGUAGE="en")
    assert answer.status_code == 200
    assert any("not configured" in str(m) for m in answer.context["messages"])
    assert ContactWay.objects.get().config_id == ""
    assert "not configured" in admin_client.get(LIST, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "未配置" in admin_client.get(LIST).content.decode()  # and in Chinese by default


@pytest.mark.django_db
def test_a_welcome_text_outside_the_template_sandbox_is_refused(admin_client, settings):
    settings.WECOM_CORP_ID = ""
    answer = admin_client.post(ADD, form(welcome_text="{{ lead.phone }}"))
    assert answer.status_code == 200  # the form again, with the error
    assert "lead.phone" in answer.content.decode()
    assert not ContactWay.objects.exists()


@pytest.mark.django_db
def test_the_list_counts_the_leads_each_code_acquired_in_one_query(
    admin_client, settings, django_assert_max_num_queries
):
    settings.WECOM_CORP_ID = ""
    for n in range(4):
        ContactWay.objects.create(name=f"码{n}", state=f"qr-{n}", source="企微活码", user_ids=["zhangsan"])
    for n, state in enumerate(["qr-0", "qr-0", "qr-0", "qr-1", "elsewhere"]):
        lead_upsert(
            data={
                "wecom_external_userid": f"wm{n}",
                "source": "企微活码",
                "properties": {"wecom_state": state},
            }
        )
    lead_upsert(
        data={"wecom_external_userid": "wmForm", "source": "官网表单", "properties": {"wecom_state": "qr-1"}}
    )
    with django_assert_max_num_queries(12):
        page = admin_client.get(LIST, {"o": "-7"})
    counts = [way.leads_acquired for way in page.context["cl"].result_list]
    assert counts == [3, 1, 0, 0]


@pytest.mark.django_db
def test_staff_members_and_inbound_payloads_admin_pages_render(admin_client, settings):
    settings.WECOM_CORP_ID = ""
    WecomMember.objects.create(userid="zhangsan", name="张三")
    payload = InboundPayload.objects.create(
        source="wecom",
        kind="add_external_contact",
        dedupe_key="wecom:test",
        received_at=timezone_now() - timedelta(minutes=5),
        body={
            "ExternalUserID": "wmX",
            "Event": "change_external_contact",
            "ChangeType": "add_external_contact",
        },
        raw="<xml/>",
        processed_at=timezone_now(),
        attempts=1,
    )
    assert (
        "张三" in admin_client.get(reverse("admin:nurture_channels_wecommember_changelist")).content.decode()
    )
    assert admin_client.get(reverse("admin:nurture_channels_wecommember_add")).status_code == 200
    payloads = reverse("admin:nurture_channels_inboundpayload_changelist")
    for query in (
        {},
        {"processed": "no"},
        {"processed": "yes"},
        {"source": "wecom", "kind": "add_external_contact"},
    ):
        assert admin_client.get(payloads, query).status_code == 200
    page = admin_client.get(reverse("admin:nurture_channels_inboundpayload_change", args=[payload.pk]))
    assert page.status_code == 200 and "wmX" in page.content.decode()
    assert admin_client.get(reverse("admin:nurture_channels_inboundpayload_add")).status_code == 403
    assert admin_client.get(reverse("admin:nurture_channels_contactway_add")).status_code == 200


@pytest.mark.django_db
def test_process_again_puts_the_payload_back_and_processes_it(
    admin_client, settings, eager, django_capture_on_commit_callbacks
):
    settings.WECOM_CORP_ID = ""
    payload = InboundPayload.objects.create(
        source="wecom",
        kind="add_external_contact",
        dedupe_key="wecom:again",
        received_at=timezone_now() - timedelta(hours=1),
        body={
            "Event": "change_external_contact",
            "ChangeType": "add_external_contact",
            "ExternalUserID": "wmAgain",
            "UserID": "zhangsan",
            "CreateTime": "1764576000",
        },
        attempts=10,  # gave up on it
        error="OperationalError: the database was away",
    )
    payloads = reverse("admin:nurture_channels_inboundpayload_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(payloads, {"action": "process_again", "_selected_action": [payload.pk]})
    payload.refresh_from_db()
    assert payload.processed_at is not None and payload.attempts == 1 and payload.error == ""
    assert Lead.objects.get(wecom_external_userid="wmAgain").wecom_follow_user == "zhangsan"
