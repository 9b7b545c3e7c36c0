"""WeCom moments (客户朋友圈, `externalcontact/add_moment_task`) visible only to the leads whose touch is due.

Touches of one step that fall due on one local date are one moment (a MomentTask): their leads are
given a corp tag of that step and date (`add_corp_tag` in the group "nurture 朋友圈", `mark_tag` by
their follow-up member), then the moment is created for those members with that tag as its visible
range. Each member publishes it in the WeCom app; touches are `awaiting_confirm` ("moment:<task pk>")
until reconcile sees their member's `publish_status` 1 (`get_moment_task_result` → moment_id, then
`get_moment_task`).

The MomentTask records progress (touches, those tagged, state), so a worker that died midway is
resumed by the next batch of the same touches without posting twice: a moment whose creation was
called but not recorded (state `posting`) is first looked for with `get_moment_list`. A later batch
of the same step and date, after the moment was posted, is a new part with its own tag.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from channels.adapters.base import (
    BatchOutcome,
    OutgoingMessage,
    PermanentError,
    PolicyVerdict,
    RetryableError,
    SendResult,
    SendStatus,
)
from channels.adapters.wecom import WecomBaseAdapter, link_attachment, wecom_contact
from channels.models import MomentTask
from channels.wecom.client import WecomClient, WecomError, wecom_client

TAG_GROUP = "nurture 朋友圈"
# A task still `tagging` untouched this long belongs to a dead worker: the next batch resumes it.
LEASE = timedelta(minutes=10)
SAVE_EVERY = 200  # tagged touches between progress saves
TASK_PAGE = 1000  # get_moment_task's largest `limit`
LIST_PAGE = 20  # get_moment_list's largest `limit`
# mark_tag errcodes meaning this customer is not (or no longer) the member's contact.
NOT_FRIEND = {84061, 40096, 60111}
_OPEN = (MomentTask.State.TAGGING, MomentTask.State.POSTING)
_POSTED = (MomentTask.State.POSTED, MomentTask.State.PUBLISHED)


def local_date(message: OutgoingMessage) -> date:
    """The local date (in the sequence's timezone) the touch fell due on."""
    zone = ZoneInfo(message.timezone)
    return (message.due_at or timezone.now()).astimezone(zone).date()


def moment_ref(task: MomentTask) -> str:
    return f"moment:{task.pk}"


def _task_pk(ref: str) -> int | None:
    prefix, _, pk = ref.partition(":")
    return int(pk) if prefix == "moment" and pk.isdigit() else None


class WecomMomentAdapter(WecomBaseAdapter):
    channel = "wecom_moment"  # one mark_tag per lead: the corp's quota, shared with private messages

    def policy_check(self, message: OutgoingMessage, now: Any) -> PolicyVerdict:
        if not all(wecom_contact(message)):
            return PolicyVerdict(False, "no_wecom_contact")
        return PolicyVerdict(True)

    # --- Sending.

    def send_batch(self, messages: list[OutgoingMessage]) -> dict[int, BatchOutcome]:
        """One moment per step and local date; results by touch."""
        groups: dict[tuple[int, date], list[OutgoingMessage]] = defaultdict(list)
        for message in messages:
            groups[(message.step_id or 0, local_date(message))].append(message)
        client = wecom_client()
        outcomes: dict[int, BatchOutcome] = {}
        for (step_id, day), group in groups.items():
            outcomes.update(self._moment(client, step_id, day, group))
        return outcomes

    def _moment(
        self, client: WecomClient, step_id: int, day: date, messages: list[OutgoingMessage]
    ) -> dict[int, BatchOutcome]:
        outcomes: dict[int, BatchOutcome] = {}
        posted = {
            touch_id: task
            for task in MomentTask.objects.filter(step_id=step_id, local_date=day, state__in=_POSTED)
            for touch_id in task.touch_ids
        }
        rest = []
        for message in messages:
            if message.touch_id in posted:  # its moment is out already (a result that was lost)
                ref = moment_ref(posted[message.touch_id])
                outcomes[message.touch_id] = SendResult(SendStatus.AWAITING_CONFIRM, provider_ref=ref)
            else:
                rest.append(message)
        if not rest:
            return outcomes
        task = self._task_for(step_id, day, rest)
        try:
            if not task.tag_id:
                task.tag_id = self._tag(client, task.tag_name)
                task.save(update_fields=["tag_id", "updated_at"])
            outcomes.update(self._mark(client, task, rest))
            if not task.marked_ids:  # nobody could be tagged: nothing to post
                MomentTask.objects.filter(pk=task.pk).update(
                    state=MomentTask.State.FAILED, error="no lead could be tagged"
                )
                return outcomes
            self._post(client, task, rest)
        except RetryableError as exc:
            outcomes.update({m.touch_id: exc for m in rest if m.touch_id not in outcomes})
            return outcomes
        except WecomError as exc:
            MomentTask.objects.filter(pk=task.pk).update(state=MomentTask.State.FAILED, error=str(exc)[:2000])
            error = PermanentError(str(exc), code=f"wecom_{exc.errcode}")
            outcomes.update({m.touch_id: error for m in rest if m.touch_id not in outcomes})
            return outcomes
        for message in rest:
            if message.touch_id not in outcomes:
                outcomes[message.touch_id] = SendResult(
                    SendStatus.AWAITING_CONFIRM, provider_ref=moment_ref(task)
                )
        return outcomes

    def _task_for(self, step_id: int, day: date, messages: list[OutgoingMessage]) -> MomentTask:
        """The task these touches resume (one they are already in, or one a dead worker left), else a
        new part of this step and date."""
        ids = {m.touch_id for m in messages}
        stale = timezone.now() - LEASE
        with transaction.atomic():
            tasks = list(
                MomentTask.objects.select_for_update()
                .filter(step_id=step_id, local_date=day)
                .order_by("part")
            )
            task = next(
                (t for t in tasks if t.state in _OPEN and (ids & set(t.touch_ids) or t.updated_at < stale)),
                None,
            )
            if task is None:
                part = (max((t.part for t in tasks), default=0)) + 1
                name = f"m{step_id}-{day.isoformat()}" + (f"-{part}" if part > 1 else "")
                task = MomentTask(step_id=step_id, local_date=day, part=part, tag_name=name)
            task.touch_ids = sorted(set(task.touch_ids) | ids)
            task.save()
        return task

    def _tag(self, client: WecomClient, name: str) -> str:
        """The corp tag's id: created in the group TAG_GROUP, or found there when it exists."""
        try:
            body = client.call(
                "externalcontact/add_corp_tag", {"group_name": TAG_GROUP, "tag": [{"name": name}]}
            )
            return next(t["id"] for t in body["tag_group"]["tag"] if t["name"] == name)
        except WecomError as exc:
            if exc.errcode != 40071:  # anything but "already exists"
                raise
        body = client.call("externalcontact/get_corp_tag_list", {})
        for group in body.get("tag_group") or []:
            if group.get("group_name") == TAG_GROUP:
                for tag in group.get("tag") or []:
                    if tag.get("name") == name:
                        return tag["id"]
        raise WecomError(40068, f"corp tag {name} exists but was not found", path="get_corp_tag_list")

    def _mark(
        self, client: WecomClient, task: MomentTask, messages: list[OutgoingMessage]
    ) -> dict[int, BatchOutcome]:
        """Tag each lead not tagged yet; those that are not the member's contact fail (and leave the task)."""
        from channels.ratelimit import bucket_wait

        outcomes: dict[int, BatchOutcome] = {}
        marked = set(task.marked_ids)
        senders = set(task.senders)
        dropped: set[int] = set()
        since_save = 0

        def save() -> None:
            task.marked_ids, task.senders = sorted(marked), sorted(senders)
            task.touch_ids = sorted(set(task.touch_ids) - dropped)
            task.save(update_fields=["marked_ids", "senders", "touch_ids", "updated_at"])

        try:
            for message in messages:
                if message.touch_id in marked:
                    continue
                if self.rate and not bucket_wait(
                    key=self.rate_key(),
                    rate=self.rate[0],
                    burst=self.rate[1],
                    max_wait=settings.NURTURE_RATE_MAX_WAIT_SECONDS,
                ):
                    raise RetryableError("WeCom rate limit", retry_after=5)
                userid, external = wecom_contact(message)
                try:
                    client.call(
                        "externalcontact/mark_tag",
                        {"userid": userid, "external_userid": external, "add_tag": [task.tag_id]},
                    )
                except WecomError as exc:
                    dropped.add(message.touch_id)
                    code = "not_friend" if exc.errcode in NOT_FRIEND else f"wecom_{exc.errcode}"
                    outcomes[message.touch_id] = PermanentError(str(exc), code=code)
                    continue
                marked.add(message.touch_id)
                senders.add(userid)
                since_save += 1
                if since_save >= SAVE_EVERY:
                    save()
                    since_save = 0
        finally:
            save()
        return outcomes

    def _post(self, client: WecomClient, task: MomentTask, messages: list[OutgoingMessage]) -> None:
        """Create the moment for the tagged leads' members (unless a crashed attempt already did)."""
        marked = set(task.marked_ids)
        members = sorted(task.senders)  # the members of the tagged leads
        sample = messages[0]
        if task.state == MomentTask.State.POSTING:
            moment_id = self._find_posted(client, task, sample.text)
            if moment_id:
                task.moment_id, task.state = moment_id, MomentTask.State.POSTED
                task.save(update_fields=["moment_id", "state", "updated_at"])
                return
        # Only tagged leads are in the moment: the others get a later part when they come again.
        task.touch_ids = sorted(marked)
        task.state = MomentTask.State.POSTING
        task.save(update_fields=["touch_ids", "state", "updated_at"])
        body: dict[str, Any] = {
            "text": {"content": sample.text},
            "visible_range": {
                "sender_list": {"user_list": members},
                "external_contact_list": {"tag_list": [task.tag_id]},
            },
        }
        if sample.link:
            body["attachments"] = [link_attachment(sample, title_bytes=64)]
        answer = client.call("externalcontact/add_moment_task", body)
        task.jobid, task.state = answer["jobid"], MomentTask.State.POSTED
        task.save(update_fields=["jobid", "state", "updated_at"])

    def _find_posted(self, client: WecomClient, task: MomentTask, text: str) -> str:
        """A moment with this text created since the task last moved (a call whose answer was lost)."""
        end = int(time.time())
        start = max(int((task.updated_at - timedelta(minutes=1)).timestamp()), end - 30 * 86400)
        cursor = ""
        while True:
            body = client.call(
                "externalcontact/get_moment_list",
                {
                    "start_time": start,
                    "end_time": end,
                    "filter_type": 0,
                    "limit": LIST_PAGE,
                    "cursor": cursor,
                },
            )
            for row in body.get("moment_list") or []:
                if (row.get("text") or {}).get("content", "") == text:
                    return row["moment_id"]
            cursor = body.get("next_cursor") or ""
            if not cursor:
                return ""

    # --- Reconcile.

    def reconcile_batch(
        self, items: list[tuple[OutgoingMessage, str]]
    ) -> dict[int, SendResult | PermanentError | None]:
        """Touches awaiting their member's publication: per task, the job's moment_id (once), then each
        member's publish_status. A touch without a reference is found in its step and date's tasks."""
        outcomes: dict[int, SendResult | PermanentError | None] = {}
        by_task: dict[int, list[OutgoingMessage]] = defaultdict(list)
        lost = [m for m, ref in items if _task_pk(ref) is None]
        for message, ref in items:
            pk = _task_pk(ref)
            if pk is not None:
                by_task[pk].append(message)
        if lost:
            keys = {(m.step_id or 0, local_date(m)) for m in lost}
            tasks = [
                t
                for step_id, day in keys
                for t in MomentTask.objects.filter(step_id=step_id, local_date=day, state__in=_POSTED)
            ]
            for message in lost:
                task = next((t for t in tasks if message.touch_id in t.touch_ids), None)
                if task is None:
                    outcomes[message.touch_id] = None  # never posted: send again
                else:
                    by_task[task.pk].append(message)
        if not by_task:
            return outcomes
        client = wecom_client()
        tasks_by_pk = MomentTask.objects.in_bulk(list(by_task))
        for pk, messages in by_task.items():
            task = tasks_by_pk.get(pk)
            if task is None:
                outcomes.update({m.touch_id: None for m in messages})
                continue
            try:
                outcomes.update(self._reconcile_task(client, task, messages))
            except (RetryableError, WecomError):
                waiting = SendResult(SendStatus.AWAITING_CONFIRM, provider_ref=moment_ref(task))
                outcomes.update({m.touch_id: waiting for m in messages})
        return outcomes

    def _reconcile_task(
        self, client: WecomClient, task: MomentTask, messages: list[OutgoingMessage]
    ) -> dict[int, SendResult | PermanentError | None]:
        ref = moment_ref(task)
        waiting = SendResult(SendStatus.AWAITING_CONFIRM, provider_ref=ref)
        if task.state == MomentTask.State.FAILED:
            error = PermanentError(task.error or "moment failed", code="moment_failed")
            return {m.touch_id: error for m in messages}
        if not task.moment_id:
            body = client.call(
                "externalcontact/get_moment_task_result", method="GET", params={"jobid": task.jobid}
            )
            if int(body.get("status") or 0) != 3:  # 1 started, 2 creating
                return {m.touch_id: waiting for m in messages}
            result = body.get("result") or {}
            if int(result.get("errcode") or 0) != 0 or not result.get("moment_id"):
                task.state, task.error = MomentTask.State.FAILED, str(result.get("errmsg") or result)[:2000]
                task.save(update_fields=["state", "error", "updated_at"])
                return self._reconcile_task(client, task, messages)
            task.moment_id = result["moment_id"]
            task.save(update_fields=["moment_id", "updated_at"])
        published: dict[str, int] = {}
        cursor = ""
        while True:
            body = client.call(
                "externalcontact/get_moment_task",
                {"moment_id": task.moment_id, "cursor": cursor, "limit": TASK_PAGE},
            )
            for row in body.get("task_list") or []:
                published[row["userid"]] = int(row.get("publish_status") or 0)
            cursor = body.get("next_cursor") or ""
            if not cursor:
                break
        if published and all(published.values()) and task.state != MomentTask.State.PUBLISHED:
            task.state = MomentTask.State.PUBLISHED
            task.save(update_fields=["state", "updated_at"])
        outcomes: dict[int, SendResult | PermanentError | None] = {}
        for message in messages:
            status = published.get(wecom_contact(message)[0])
            if status is None:  # WeCom refused this member as a sender (invalid_sender_list)
                outcomes[message.touch_id] = PermanentError(
                    "the follow-up member cannot publish this moment", code="invalid_sender"
                )
            elif status == 1:
                outcomes[message.touch_id] = SendResult(SendStatus.SENT, provider_ref=ref)
            else:
                outcomes[message.touch_id] = waiting
        return outcomes

    def send(self, message: OutgoingMessage) -> SendResult:
        outcome = self.send_batch([message])[message.touch_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        outcome = self.reconcile_batch([(message, provider_ref)]).get(message.touch_id)
        if isinstance(outcome, PermanentError):
            raise outcome
        return outcome
