"""WeCom private messages (企业群发 to single customers, `externalcontact/add_msg_template`).

The API only creates a task for the lead's follow-up member; the message goes out when they confirm
it in the WeCom app. So a touch is `awaiting_confirm` with the task's msgid, and every tick polls
`get_groupmsg_send_result`: 1 → sent, 2 → failed (not a friend), 3 → skipped (the customer's 群发 quota
was used up), 0 → still waiting.

Identical content due for many leads of one member is one task with their `external_userid` list
(≤ 10,000); personalised content is one task per lead. WeCom does not deduplicate: when a worker dies
between the call and recording its result, `reconcile` looks the task up by content and recipient
(`get_groupmsg_list_v2`), so the touch is not sent twice.
"""

from __future__ import annotations

import calendar
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from django.conf import settings

from channels.adapters.base import (
    BaseAdapter,
    BatchOutcome,
    OutgoingMessage,
    PermanentError,
    PolicyVerdict,
    RetryableError,
    SendResult,
    SendStatus,
)
from channels.wecom.client import WecomError, wecom_client

# external_userid per add_msg_template (WeCom's limit).
MAX_RECIPIENTS = 10_000
SEND_RESULT_PAGE = 1000  # get_groupmsg_send_result's largest `limit`
LIST_PAGE = 100  # get_groupmsg_list_v2's largest `limit`
# Touch states that used up a customer's 群发 quota (or are about to: sending elsewhere right now).
_COUNTED_STATES = ("awaiting_confirm", "sent", "delivered")
# A lost send is looked for among tasks created from this long before its due time until now.
_LOOKUP_BEFORE = timedelta(hours=1)


def wecom_contact(message: OutgoingMessage) -> tuple[str, str]:
    """(follow-up member UserID, external_userid) of the message's lead; empty when it has none."""
    return str(message.lead.get("wecom_follow_user") or ""), str(
        message.lead.get("wecom_external_userid") or ""
    )


def link_attachment(message: OutgoingMessage, *, title_bytes: int = 128) -> dict[str, Any]:
    """The message's link as a WeCom `link` attachment (title ≤ 128 bytes)."""
    first_line = message.text.strip().splitlines()[0] if message.text.strip() else ""
    title = (message.content_title or first_line or message.link).encode()[:title_bytes]
    return {"msgtype": "link", "link": {"title": title.decode(errors="ignore"), "url": message.link}}


def cap_period_start(local: datetime, period: str) -> tuple[datetime, int]:
    """Start of the quota period containing `local` (aware, local time) and how many 群发 a customer
    may receive in it: WeCom's rule, 群发助手 → 设置群发规则 (month: as many as the month has days;
    week: 7; day: 1)."""
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, 1
    if period == "week":
        return day - timedelta(days=day.weekday()), 7
    return day.replace(day=1), calendar.monthrange(day.year, day.month)[1]


def parse_ref(ref: str) -> tuple[str, str]:
    """(msgid, sender) of a provider_ref `msgid/sender`."""
    msgid, _, sender = ref.partition("/")
    return msgid, sender


class WecomBaseAdapter(BaseAdapter):
    """What the WeCom channels share: the corp's settings, batches, and one token bucket per corp."""

    required_settings = ("WECOM_CORP_ID", "WECOM_SECRET")
    batch_size = 10_000
    # WeCom allows a corp 10,000 calls a minute and 150,000 an hour of one API (more is 45009): 40 a
    # second stays under the hourly limit; private messages and moments share the bucket (one corp).
    rate: ClassVar[tuple[float, int] | None] = (40.0, 100)
    honours_idempotency_key = False  # WeCom does not deduplicate: results are written as calls return

    def rate_key(self) -> str:
        return f"wecom:{settings.WECOM_CORP_ID}"


class WecomAdapter(WecomBaseAdapter):
    channel = "wecom"

    # --- Policy.

    def policy_check_batch(self, messages: list[OutgoingMessage], now: datetime) -> dict[int, PolicyVerdict]:
        """No WeCom contact → refused; else WeCom's per-customer 群发 quota (WECOM_CUSTOMER_CAP_PERIOD),
        counted from this lead's wecom touches already sent or awaiting confirmation, in one query."""
        from django.db.models import Q

        from sequences.models import Touch

        verdicts: dict[int, PolicyVerdict] = {}
        period = settings.WECOM_CUSTOMER_CAP_PERIOD
        starts: dict[int, tuple[datetime, int]] = {}
        for message in messages:
            if not all(wecom_contact(message)):
                verdicts[message.touch_id] = PolicyVerdict(False, "no_wecom_contact")
            else:
                starts[message.touch_id] = cap_period_start(
                    now.astimezone(ZoneInfo(message.timezone)), period
                )
        checked = [m for m in messages if m.touch_id in starts]
        if not checked:
            return verdicts
        earliest = min(start for start, _ in starts.values())
        batch_ids = [m.touch_id for m in messages]
        rows = (
            Touch.objects.filter(lead_id__in={m.lead_id for m in checked}, channel=self.channel)
            .filter(
                Q(state__in=_COUNTED_STATES, sent_at__gte=earliest)
                | Q(state="sending", claimed_at__gte=earliest)
            )
            .exclude(pk__in=batch_ids)
            .values_list("lead_id", "sent_at", "claimed_at")
        )
        used: dict[int, list[datetime]] = defaultdict(list)
        for lead_id, sent_at, claimed_at in rows:
            used[lead_id].append(sent_at or claimed_at)
        for message in checked:
            start, limit = starts[message.touch_id]
            count = sum(1 for at in used[message.lead_id] if at >= start)
            if count >= limit:
                verdicts[message.touch_id] = PolicyVerdict(False, "quota")
            else:
                verdicts[message.touch_id] = PolicyVerdict(True)
                used[message.lead_id].append(now)  # a second touch of this lead in the batch counts it
        return verdicts

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        return self.policy_check_batch([message], now)[message.touch_id]

    # --- Sending.

    def payload(self, message: OutgoingMessage, external_userids: list[str]) -> dict[str, Any]:
        sender, _ = wecom_contact(message)
        body: dict[str, Any] = {
            "chat_type": "single",
            "external_userid": external_userids,
            "sender": sender,
            "text": {"content": message.text},
        }
        if message.link:
            body["attachments"] = [link_attachment(message)]
        return body

    def send_batch(self, messages: list[OutgoingMessage]) -> dict[int, BatchOutcome]:
        """One task per member and identical content (its customers ≤ 10,000 at a time); results by
        touch. Touches left out (the rate limit would wait too long) go back to the queue."""
        from channels.ratelimit import bucket_wait

        groups: dict[tuple[str, str, str, str], list[OutgoingMessage]] = defaultdict(list)
        for message in messages:
            sender, _ = wecom_contact(message)
            groups[(sender, message.text, message.link, message.content_title)].append(message)
        outcomes: dict[int, BatchOutcome] = {}
        retry: RetryableError | None = None
        client = wecom_client()
        for group in groups.values():
            for start in range(0, len(group), MAX_RECIPIENTS):
                chunk = group[start : start + MAX_RECIPIENTS]
                if retry is not None:  # WeCom said to wait: the rest waits too
                    outcomes.update({m.touch_id: retry for m in chunk})
                    continue
                if self.rate and not bucket_wait(
                    key=self.rate_key(),
                    rate=self.rate[0],
                    burst=self.rate[1],
                    max_wait=settings.NURTURE_RATE_MAX_WAIT_SECONDS,
                ):
                    return outcomes
                try:
                    outcomes.update(self._send_chunk(client, chunk))
                except RetryableError as exc:
                    retry = exc
                    outcomes.update({m.touch_id: exc for m in chunk})
        return outcomes

    def _send_chunk(self, client: Any, chunk: list[OutgoingMessage]) -> dict[int, BatchOutcome]:
        by_external: dict[str, list[OutgoingMessage]] = defaultdict(list)
        for message in chunk:
            by_external[wecom_contact(message)[1]].append(message)
        try:
            body = client.call("externalcontact/add_msg_template", self.payload(chunk[0], list(by_external)))
        except WecomError as exc:
            error = PermanentError(str(exc), code=f"wecom_{exc.errcode}")
            return {m.touch_id: error for m in chunk}
        failed = set(body.get("fail_list") or [])
        ref = f"{body['msgid']}/{wecom_contact(chunk[0])[0]}"
        outcomes: dict[int, BatchOutcome] = {}
        for external, group in by_external.items():
            for message in group:
                if external in failed:
                    outcomes[message.touch_id] = PermanentError(
                        "the customer is not a contact of the follow-up member", code="not_friend"
                    )
                else:
                    outcomes[message.touch_id] = SendResult(SendStatus.AWAITING_CONFIRM, provider_ref=ref)
        return outcomes

    def send(self, message: OutgoingMessage) -> SendResult:
        outcome = self.send_batch([message]).get(message.touch_id)
        if outcome is None:
            raise RetryableError("rate limited", retry_after=1)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    # --- Reconcile.

    @staticmethod
    def _result(status: int | None, ref: str) -> SendResult | PermanentError:
        if status == 1:
            return SendResult(SendStatus.SENT, provider_ref=ref)
        if status == 2:
            return PermanentError("the customer is not a contact of the follow-up member", code="not_friend")
        if status == 3:
            return SendResult(SendStatus.SKIPPED_POLICY, provider_ref=ref, reason="quota")
        return SendResult(SendStatus.AWAITING_CONFIRM, provider_ref=ref)

    def _statuses(self, client: Any, msgid: str, sender: str) -> dict[str, int]:
        """external_userid → status of one task (every page)."""
        statuses: dict[str, int] = {}
        cursor = ""
        while True:
            body = client.call(
                "externalcontact/get_groupmsg_send_result",
                {"msgid": msgid, "userid": sender, "limit": SEND_RESULT_PAGE, "cursor": cursor},
            )
            for row in body.get("send_list") or []:
                statuses[row["external_userid"]] = int(row.get("status") or 0)
            cursor = body.get("next_cursor") or ""
            if not cursor:
                return statuses

    def reconcile_batch(
        self, items: list[tuple[OutgoingMessage, str]]
    ) -> dict[int, SendResult | PermanentError | None]:
        """Touches awaiting confirmation: one paginated `get_groupmsg_send_result` per task. A touch
        without a reference (its worker died before recording it) is looked up by content; None when
        WeCom has no task for it (send it again). Failing calls leave touches waiting."""
        client = wecom_client()
        outcomes: dict[int, SendResult | PermanentError | None] = {}
        known: dict[str, list[OutgoingMessage]] = defaultdict(list)
        lost: list[OutgoingMessage] = []
        for message, ref in items:
            (known[ref] if ref else lost).append(message)
        for ref, group in known.items():
            msgid, sender = parse_ref(ref)
            try:
                statuses = self._statuses(client, msgid, sender or wecom_contact(group[0])[0])
            except (RetryableError, WecomError):
                statuses = {}
            for message in group:
                outcomes[message.touch_id] = self._result(statuses.get(wecom_contact(message)[1]), ref)
        if lost:
            outcomes.update(self._find_lost(client, lost))
        return outcomes

    def _find_lost(
        self, client: Any, messages: list[OutgoingMessage]
    ) -> dict[int, SendResult | PermanentError | None]:
        """Tasks created for sends whose result was never recorded: the tasks of the time window with
        the same content, and among them the one whose sender has this customer."""
        end = int(time.time())
        earliest = min((m.due_at for m in messages if m.due_at), default=None)
        start = int((earliest - _LOOKUP_BEFORE).timestamp()) if earliest else end - 86400
        start = max(start, end - 30 * 86400)  # the API's range is a month at most
        candidates: dict[str, list[tuple[str, str]]] = defaultdict(list)  # text → (msgid, link)
        cursor = ""
        while True:
            body = client.call(
                "externalcontact/get_groupmsg_list_v2",
                {
                    "chat_type": "single",
                    "start_time": start,
                    "end_time": end,
                    "filter_type": 0,
                    "limit": LIST_PAGE,
                    "cursor": cursor,
                },
            )
            for row in body.get("group_msg_list") or []:
                links = [
                    a["link"].get("url", "")
                    for a in row.get("attachments") or []
                    if a.get("msgtype") == "link"
                ]
                text = (row.get("text") or {}).get("content", "")
                candidates[text].append((row["msgid"], links[0] if links else ""))
            cursor = body.get("next_cursor") or ""
            if not cursor:
                break
        statuses: dict[tuple[str, str], dict[str, int]] = {}
        outcomes: dict[int, SendResult | PermanentError | None] = {}
        for message in messages:
            sender, external = wecom_contact(message)
            outcomes[message.touch_id] = None
            for msgid, link in candidates.get(message.text, []):
                if message.link and link != message.link:  # (the dispatcher's reconcile has no link)
                    continue
                if (msgid, sender) not in statuses:
                    statuses[(msgid, sender)] = self._statuses(client, msgid, sender)
                if external in statuses[(msgid, sender)]:
                    ref = f"{msgid}/{sender}"
                    outcomes[message.touch_id] = self._result(statuses[(msgid, sender)][external], ref)
                    break
        return outcomes

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        outcome = self.reconcile_batch([(message, provider_ref)]).get(message.touch_id)
        if isinstance(outcome, PermanentError):
            raise outcome
        return outcome
