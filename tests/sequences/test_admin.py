"""The sequence admin: the list (bounded queries), the change page with its timeline and live figures,
saving through `sequence_check`/`sequence_save`, status actions with their confirmation, the preview,
enrollments and touches read-only with "mark task done"; and a marketer in Chromium opening the preview."""

import json
import os
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils.timezone import now as timezone_now

from leads.models import Pool
from sequences.models import Enrollment, Sequence, Step, Touch
from sequences.services import sequence_enroll, sequence_save
from tests.conftest import CHROMIUM
from tests.factories import LeadFactory

EN = {"HTTP_ACCEPT_LANGUAGE": "en"}
SEQUENCE_FIELDS = {
    "name": "新线索培育",
    "goal": "",
    "status": "paused",
    "trigger": '{"type": "manual"}',
    "entry_rule": "",
    "exit_rule": "",
    "exit_stages": '["sql", "won", "lost"]',
    "reentry": '"never"',
    "timezone": "Asia/Shanghai",
    "quiet_hours": '{"start": "21:00", "end": "08:00"}',
    "max_lateness_minutes": "1440",
    "caps": "{}",
    "on_complete": "{}",
}
STEP_DEFAULTS = {
    "position": "",
    "day": "0",
    "send_time": "10:00",
    "channel": "console",
    "mode": "auto",
    "text": "",
    "content": "",
    "condition": "",
    "else_position": "",
    "wait_for": "",
    "else_channel": "",
}


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("boss", "boss@example.com", "demo-pass-123")


@pytest.fixture
def logged_in(client, admin_user):
    client.force_login(admin_user)
    return client


def form_data(steps, *, initial=0, **fields):
    data = {**SEQUENCE_FIELDS, **fields}
    data.update(
        {
            "steps-TOTAL_FORMS": str(len(steps)),
            "steps-INITIAL_FORMS": str(initial),
            "steps-MIN_NUM_FORMS": "0",
            "steps-MAX_NUM_FORMS": "1000",
        }
    )
    for i, step in enumerate(steps):
        for key, value in {**STEP_DEFAULTS, **step}.items():
            if value is not None:
                data[f"steps-{i}-{key}"] = value
    return data


def make_sequence(name="新线索培育", status="active", **data):
    return sequence_save(
        data={"name": name, "status": status, **data},
        steps=[
            {"day": 0, "send_time": "10:00", "text": "{{ lead.name }}您好"},
            {
                "day": 2,
                "condition": {"field": "industry", "op": "eq", "value": "制造"},
                "else_position": 2,
                "text": "制造业案例",
            },
            {"day": 5, "channel": "call", "mode": "task", "text": "电话回访"},
        ],
    )


def test_changelist_shows_counts_in_bounded_queries(logged_in, django_assert_max_num_queries):
    for n in range(4):
        seq = make_sequence(name=f"序列{n}")
        leads = LeadFactory.create_batch(3)
        sequence_enroll(sequence=seq, lead_ids=[lead.pk for lead in leads])
        enrollment = Enrollment.objects.filter(sequence=seq).first()
        Touch.objects.create(
            enrollment=enrollment,
            sequence=seq,
            lead_id=enrollment.lead_id,
            channel="console",
            due_at=timezone_now(),
            state="sent",
            sent_at=timezone_now(),
            idempotency_key=f"k{n}",
        )
    with django_assert_max_num_queries(10):
        page = logged_in.get("/admin/sequences/sequence/", **EN).content.decode()
    assert "序列3" in page and "Manual (API, admin, SDR)" in page
    assert page.count(">3</a>") == 4  # active enrollments, linked to the enrollment list
    assert 'class="field-touches_sent">1<' in page


def test_change_page_shows_the_timeline_and_live_figures(logged_in):
    seq = make_sequence()
    leads = LeadFactory.create_batch(2)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk for lead in leads])
    page = logged_in.get(f"/admin/sequences/sequence/{seq.pk}/change/", **EN).content.decode()
    timeline = page[page.index('class="nurture-timeline"') :][:4000]
    assert "Day 0" in timeline and "Day 2" in timeline and "Day 5" in timeline
    assert "{{ lead.name }}您好" in timeline
    assert "制造" in timeline and "else → step #2" in timeline
    assert "Phone call task" in timeline and "Staff task" in timeline
    assert '<strong class="nurture-figure-enrolled">2</strong>' in page
    assert f"/admin/sequences/sequence/{seq.pk}/preview/" in page
    assert 'name="steps-2-text"' in page  # the steps are edited inline


def test_the_timeline_flags_a_step_on_a_channel_not_configured(logged_in, settings):
    from channels.registry import adapters_reset

    settings.NURTURE_CHANNEL_ADAPTERS = {"console": "channels.adapters.console.ConsoleAdapter"}
    adapters_reset()
    seq = sequence_save(
        data={"name": "短信", "status": "paused"},
        steps=[{"day": 0, "text": "控制台"}, {"day": 1, "channel": "sms", "text": "短信"}],
    )
    page = logged_in.get(f"/admin/sequences/sequence/{seq.pk}/change/", **EN).content.decode()
    timeline = page[page.index('class="nurture-timeline"') :][:4000]
    assert timeline.count("not configured: its touches are skipped") == 1
    flagged = timeline[: timeline.index("not configured")]
    assert "SMS" in flagged[flagged.rindex("Day ") :]
    adapters_reset()


def test_add_a_sequence_with_steps_through_sequence_save(logged_in):
    response = logged_in.post(
        "/admin/sequences/sequence/add/",
        form_data(
            [
                {"day": "0", "text": "{{ lead.name }}您好"},
                {"day": "3", "send_time": "", "text": "第三天"},
                {"day": "1", "position": "", "text": "第一天"},
            ]
        ),
        **EN,
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    seq = Sequence.objects.get(name="新线索培育")
    steps = list(seq.steps.order_by("position").values_list("position", "day", "send_time", "text"))
    assert [s[:2] for s in steps] == [(0, 0), (1, 3), (2, 1)]
    assert steps[1][2] is None  # an empty send time: the enrollment's time of day
    assert seq.trigger == {"type": "manual"} and seq.reentry == "never"


def test_bad_rules_are_refused_with_their_path(logged_in):
    data = form_data(
        [
            {
                "day": "0",
                "condition": json.dumps({"all": [{"score_gte": 1}, {"event": "x", "within_days": 0}]}),
            }
        ],
        entry_rule=json.dumps({"any": [{"field": "nope", "op": "eq", "value": 1}]}),
    )
    page = logged_in.post("/admin/sequences/sequence/add/", data, **EN).content.decode()
    assert "entry_rule: any[0].field:" in page
    data = form_data(
        [{"day": "0", "condition": json.dumps({"all": [{"score_gte": 1}, {"event": "x", "within_days": 0}]})}]
    )
    page = logged_in.post("/admin/sequences/sequence/add/", data, **EN).content.decode()
    assert "condition: all[1].within_days: must be a positive integer" in page
    data = form_data([{"day": "0", "position": "1"}, {"day": "1", "position": "1"}])
    page = logged_in.post("/admin/sequences/sequence/add/", data, **EN).content.decode()
    assert "two steps have the same position" in page
    data = form_data([{"day": "0", "else_position": "0", "condition": '{"score_gte": 1}'}])
    page = logged_in.post("/admin/sequences/sequence/add/", data, **EN).content.decode()
    assert "else_position: must be the position of a later step" in page
    data = form_data([], trigger='{"type": "pool_entered", "pool": "missing"}')
    page = logged_in.post("/admin/sequences/sequence/add/", data, **EN).content.decode()
    assert "trigger.pool: no pool" in page
    data = form_data([], entry_rule="{not json")
    page = logged_in.post("/admin/sequences/sequence/add/", data, **EN).content.decode()
    assert "Enter a valid JSON." in page
    assert not Sequence.objects.exists()


def test_editing_keeps_steps_unless_changed_and_a_status_change_pauses_enrollments(logged_in):
    seq = make_sequence()
    Pool.objects.create(slug="hot", name="热", rule={"score_gte": 60})
    lead = LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[lead.pk])
    steps = list(seq.steps.order_by("position"))
    rows = [
        {
            "id": str(s.pk),
            "sequence": str(seq.pk),
            "position": str(s.position),
            "day": str(s.day),
            "send_time": s.send_time.strftime("%H:%M") if s.send_time else "",
            "channel": s.channel,
            "mode": s.mode,
            "text": s.text,
            "condition": json.dumps(s.condition, ensure_ascii=False) if s.condition else "",
            "else_position": "" if s.else_position is None else str(s.else_position),
        }
        for s in steps
    ]
    data = form_data(rows, initial=3, status="paused", name="改名了")
    response = logged_in.post(f"/admin/sequences/sequence/{seq.pk}/change/", data, **EN)
    assert response.status_code == 302, response.content.decode()[:3000]
    seq.refresh_from_db()
    assert (seq.name, seq.status) == ("改名了", "paused")
    assert list(seq.steps.order_by("position").values_list("pk", flat=True)) == [s.pk for s in steps]
    assert Enrollment.objects.get(lead=lead).state == "paused"  # through sequence_status_set
    # Swapping two steps' days and dropping the last: the steps are replaced as one.
    rows[0]["day"], rows[1]["day"] = "1", "0"
    rows[1]["condition"], rows[1]["else_position"] = "", ""
    rows[2]["DELETE"] = "on"
    data = form_data(
        rows, initial=3, status="paused", name="改名了", trigger='{"type": "pool_entered", "pool": "hot"}'
    )
    response = logged_in.post(f"/admin/sequences/sequence/{seq.pk}/change/", data, **EN)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(Step.objects.filter(sequence=seq).order_by("position").values_list("day", flat=True)) == [
        1,
        0,
    ]
    assert Sequence.objects.get(pk=seq.pk).trigger == {"type": "pool_entered", "pool": "hot"}


def test_pause_action_confirms_with_the_enrolled_count_then_pauses(logged_in):
    seq = make_sequence()
    other = make_sequence(name="另一个", status="paused")
    sequence_enroll(sequence=seq, lead_ids=[lead.pk for lead in LeadFactory.create_batch(3)])
    data = {"action": "pause_sequences", "_selected_action": [seq.pk, other.pk]}
    page = logged_in.post("/admin/sequences/sequence/", data, **EN).content.decode()
    assert "3 leads are enrolled (active) and will be paused" in page
    assert Enrollment.objects.filter(state="active").count() == 3  # nothing yet
    response = logged_in.post("/admin/sequences/sequence/", {**data, "post": "yes"}, **EN)
    assert response.status_code == 302
    assert Enrollment.objects.filter(state="paused").count() == 3
    assert set(Sequence.objects.values_list("status", flat=True)) == {"paused"}
    data = {"action": "activate_sequences", "_selected_action": [seq.pk]}
    page = logged_in.post("/admin/sequences/sequence/", data, **EN).content.decode()
    assert "3 paused enrollments will be resumed" in page
    logged_in.post("/admin/sequences/sequence/", {**data, "post": "yes"}, **EN)
    assert Enrollment.objects.filter(state="active").count() == 3
    data = {"action": "archive_sequences", "_selected_action": [seq.pk]}
    page = logged_in.post("/admin/sequences/sequence/", data, **EN).content.decode()
    assert "3 enrollments (active or paused) will end" in page
    logged_in.post("/admin/sequences/sequence/", {**data, "post": "yes"}, **EN)
    assert set(Enrollment.objects.values_list("end_reason", flat=True)) == {"archived"}


def test_preview_simulates_ten_leads_and_saves_nothing(logged_in):
    seq = make_sequence(status="paused")
    LeadFactory.create_batch(12, industry="教育")
    counts = (Enrollment.objects.count(), Touch.objects.count())
    page = logged_in.get(f"/admin/sequences/sequence/{seq.pk}/preview/", **EN).content.decode()
    assert page.count('class="nurture-preview-lead"') == 10
    assert "would be enrolled now" in page and "The sequence is paused: shown as if it were active." in page
    assert "condition false (as of today) → step #2" in page
    assert "for no owner yet" in page
    assert (Enrollment.objects.count(), Touch.objects.count()) == counts
    assert logged_in.get("/admin/sequences/sequence/999/preview/").status_code == 302


def test_enrollments_and_touches_read_only_lists_and_mark_task_done(logged_in, django_assert_max_num_queries):
    seq = make_sequence()
    leads = LeadFactory.create_batch(5)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk for lead in leads])
    step = seq.steps.get(position=2)
    for i, enrollment in enumerate(Enrollment.objects.all()):
        Touch.objects.create(
            enrollment=enrollment,
            sequence=seq,
            step=step,
            lead_id=enrollment.lead_id,
            channel="call",
            mode="task",
            due_at=timezone_now() - timedelta(hours=i),
            state="task_open" if i < 3 else "skipped",
            skip_reason="" if i < 3 else "stale",
            rendered=f"电话回访 {i}",
            idempotency_key=f"task-{i}",
        )
    with django_assert_max_num_queries(10):
        page = logged_in.get("/admin/sequences/enrollment/?state=active", **EN).content.decode()
    assert leads[0].name in page
    found = logged_in.get(f"/admin/sequences/enrollment/?q=%23{leads[1].pk}").content.decode()
    assert found.count('class="field-lead_display"') == 1 and leads[1].name in found
    with django_assert_max_num_queries(12):
        page = logged_in.get(f"/admin/sequences/touch/?sequence__id__exact={seq.pk}&channel=call", **EN)
    page = page.content.decode()
    assert "电话回访 0" in page and "stale" in page and "#2 day 5" in page
    ids = list(Touch.objects.values_list("pk", flat=True))
    response = logged_in.post(
        "/admin/sequences/touch/", {"action": "mark_task_done", "_selected_action": ids}, follow=True, **EN
    )
    assert "3 tasks marked done." in response.content.decode()
    assert "2 selected touches were not open tasks." in response.content.decode()
    assert Touch.objects.filter(state="task_done", done_at__isnull=False).count() == 3
    assert logged_in.get(f"/admin/sequences/touch/{ids[0]}/change/").status_code == 200  # a read-only view
    assert logged_in.get("/admin/sequences/touch/add/").status_code == 403


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"), reason="needs Debian's chromium at /usr/bin/chromium"
)
def test_a_marketer_sees_the_timeline_and_opens_the_preview(live_server, transactional_db, page):
    get_user_model().objects.create_superuser("boss", "boss@example.com", "demo-pass-123")
    seq = make_sequence(status="paused")
    lead = LeadFactory(name="陈静", industry="制造")
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "demo-pass-123")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/sequences/sequence/{seq.pk}/change/")
    steps = page.locator(".nurture-timeline-step")
    assert steps.count() == 3
    assert "Day 2" in steps.nth(1).inner_text() and "制造业案例" in steps.nth(1).inner_text()
    page.click("a.nurture-sequence-preview-link")
    page.wait_for_selector(".nurture-preview-lead")
    section = page.locator(f'.nurture-preview-lead[data-lead="{lead.pk}"]')
    assert "陈静" in section.inner_text()
    assert "condition true (as of today)" in section.inner_text()
    assert section.locator("tbody tr").count() == 3
    assert Enrollment.objects.count() == 0 and Touch.objects.count() == 0


@pytest.mark.django_db
def test_the_lead_list_enrolls_the_selected_leads_in_a_sequence(client):
    from django.contrib.auth import get_user_model

    from sequences.models import Enrollment
    from sequences.services import sequence_save
    from tests.factories import LeadFactory

    admin_user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-123456789")
    client.force_login(admin_user)
    seq = sequence_save(data={"name": "回访序列", "status": "active"}, steps=[{"day": 1}])
    ok, dnc = LeadFactory(), LeadFactory(do_not_contact=True)
    url = "/admin/leads/lead/"
    page = client.post(url, {"action": "enroll_in_sequence", "_selected_action": [ok.pk, dnc.pk]})
    assert page.status_code == 200 and "回访序列" in page.content.decode()
    done = client.post(
        url,
        {
            "action": "enroll_in_sequence",
            "_selected_action": [ok.pk, dnc.pk],
            "post": "yes",
            "sequence": seq.pk,
            "anchor_at": "",
        },
        follow=True,
    )
    assert done.status_code == 200
    assert list(Enrollment.objects.values_list("lead_id", flat=True)) == [ok.pk]
    [message] = list(done.context["messages"])
    assert message.level_tag == "success" and "回访序列" in message.message
    assert "1" in message.message  # 1 enrolled, 1 refused (do not contact)
