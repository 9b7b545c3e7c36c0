"""The `call` channel: a touch becomes a phone call task for the lead's owner (or unassigned), with the
rendered text as talking points, due at the touch's due time. The touch waits `awaiting_confirm`
(provider_ref `call:<task id>`) until the call is logged (`sent`) or the task cancelled (`skipped`)."""

from __future__ import annotations

from django.utils.timezone import now as timezone_now

from channels.adapters.base import BaseAdapter, OutgoingMessage, PermanentError, SendResult, SendStatus
from channels.calls import call_ref, call_tasks_for_touches
from channels.models import CallTask

_STATUS = {CallTask.State.DONE: SendStatus.SENT, CallTask.State.CANCELLED: SendStatus.SKIPPED_POLICY}


class CallAdapter(BaseAdapter):
    channel = "call"
    # A touch has at most one call task (CallTask.touch is unique): sending twice makes one task.
    honours_idempotency_key = True
    batch_size = 500

    def send(self, message: OutgoingMessage) -> SendResult:
        return self.send_batch([message])[message.touch_id]  # type: ignore[return-value]

    def send_batch(self, messages: list[OutgoingMessage]) -> dict[int, SendResult | PermanentError]:
        tasks = call_tasks_for_touches(
            items=[
                {
                    "touch_id": m.touch_id,
                    "lead_id": m.lead_id,
                    "assignee_id": m.owner_id,
                    "script": m.text,
                    "due_at": m.due_at or timezone_now(),
                }
                for m in messages
            ]
        )
        outcomes: dict[int, SendResult | PermanentError] = {}
        for m in messages:
            task = tasks.get(m.touch_id)
            if task is None:  # the lead or touch vanished meanwhile
                outcomes[m.touch_id] = PermanentError("no call task could be made", code="no_task")
            else:
                outcomes[m.touch_id] = SendResult(
                    status=SendStatus.AWAITING_CONFIRM, provider_ref=call_ref(task.pk)
                )
        return outcomes

    def reconcile(self, message: OutgoingMessage, provider_ref: str) -> SendResult | None:
        return self.reconcile_batch([(message, provider_ref)])[message.touch_id]  # type: ignore[return-value]

    def reconcile_batch(
        self, items: list[tuple[OutgoingMessage, str]]
    ) -> dict[int, SendResult | PermanentError | None]:
        """Done → SENT, cancelled → SKIPPED_POLICY, open → still waiting; no task → None (send again)."""
        tasks = {
            touch_id: (pk, state)
            for touch_id, pk, state in CallTask.objects.filter(
                touch_id__in=[m.touch_id for m, _ in items]
            ).values_list("touch_id", "pk", "state")
        }
        outcomes: dict[int, SendResult | PermanentError | None] = {}
        for message, _ref in items:
            if message.touch_id not in tasks:
                outcomes[message.touch_id] = None
                continue
            task_id, state = tasks[message.touch_id]
            status = _STATUS.get(state, SendStatus.AWAITING_CONFIRM)
            reason = "cancelled" if status == SendStatus.SKIPPED_POLICY else ""
            outcomes[message.touch_id] = SendResult(
                status=status, provider_ref=call_ref(task_id), reason=reason
            )
        return outcomes
