"""Inbox notifications forwarded to the SDR's WeCom as application messages (when the settings say so)."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction

from workspace.models import Notification, SdrProfile

logger = logging.getLogger(__name__)

BATCH = 200


def notifications_forward(*, now: datetime, batch: int = BATCH) -> int:
    """Send the pending notifications to their users' WeCom (one message each). Rows are locked while they
    are sent, so two ticks do not both send one; a crash before the commit sends again, and WeCom's
    duplicate check (same text within 30 minutes) drops the repeat. Retryable errors stay pending."""
    from channels.adapters.base import PermanentError, RetryableError
    from channels.wecom.staff_messages import wecom_staff_message_send, wecom_staff_messages_configured

    sent = 0
    with transaction.atomic():
        rows = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(forward_state=Notification.Forward.PENDING)
            .order_by("created_at", "pk")[:batch]
        )
        if not rows:
            return 0
        if not wecom_staff_messages_configured():
            Notification.objects.filter(pk__in=[n.pk for n in rows]).update(
                forward_state=Notification.Forward.FAILED, forward_error="not_configured"
            )
            return 0
        userids = dict(
            SdrProfile.objects.filter(user_id__in={n.user_id for n in rows}).values_list(
                "user_id", "wecom_userid"
            )
        )
        for n in rows:
            userid = userids.get(n.user_id) or ""
            if not userid:
                n.forward_state, n.forward_error = Notification.Forward.FAILED, "no WeCom UserID"
                continue
            try:
                answer = wecom_staff_message_send(userids=[userid], text=n.text, key=f"notification:{n.pk}")
            except RetryableError as exc:
                logger.info("notification %s: WeCom busy (%s), next tick", n.pk, exc)
                continue
            except PermanentError as exc:
                n.forward_state, n.forward_error = Notification.Forward.FAILED, str(exc)[:300]
                continue
            if answer.get("invalid_userids"):
                n.forward_state, n.forward_error = Notification.Forward.FAILED, f"unknown UserID {userid}"
            else:
                n.forward_state, n.forward_error = Notification.Forward.SENT, ""
                sent += 1
        Notification.objects.bulk_update(rows, ["forward_state", "forward_error"])
    return sent
