"""Application messages (应用消息, `message/send`) to staff members: the SDR workspace forwards its
notifications (a hot lead assigned, an SLA about to be breached, an escalation) to the SDR's WeCom.

    from channels.wecom.staff_messages import wecom_staff_message_send, wecom_staff_messages_configured
    if wecom_staff_messages_configured():
        wecom_staff_message_send(userids=["zhangsan"], text="新的热线索：…", key=f"notification:{pk}")

The message comes from the self-built app WECOM_AGENT_ID and needs that app's own token
(WECOM_AGENT_SECRET), not the 客户联系 secret; recipients must be in the app's visible range (可见范围).
Errors are typed like the channel adapters' (`channels.adapters.wecom`): RetryableError from the client
(network, 5xx, -1, 45009 …) passes through, any other errcode is a PermanentError `wecom_<errcode>`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.core.cache import cache

from channels.adapters.base import PermanentError
from channels.wecom.client import WecomError, wecom_agent_client

__all__ = ["wecom_staff_message_send", "wecom_staff_messages_configured"]

# WeCom cuts a text message's content beyond 2048 bytes; we cut it ourselves, on a character boundary.
MAX_TEXT_BYTES = 2048
# touser names at most 1000 members per call.
MAX_RECIPIENTS = 1000
# WeCom drops a request identical to one of the last 30 minutes; a `key` is remembered as long.
DUPLICATE_CHECK_SECONDS = 1800
# Every recipient is unknown or outside the app's visible range (some only: `invaliduser` with errcode 0).
ALL_RECIPIENTS_INVALID = 81013


def wecom_staff_messages_configured() -> bool:
    """Whether application messages can be sent (WECOM_CORP_ID, WECOM_AGENT_ID, WECOM_AGENT_SECRET set)."""
    return bool(settings.WECOM_CORP_ID and settings.WECOM_AGENT_ID and settings.WECOM_AGENT_SECRET)


def _truncate(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    return text.encode()[:limit].decode(errors="ignore")


def _claim_key(key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"wecom:staff_message:{settings.WECOM_CORP_ID}:{settings.WECOM_AGENT_ID}:{digest}"


def _result(recipients: list[str], body: dict[str, Any]) -> dict[str, Any]:
    # WeCom answers invaliduser in lower case: give the caller back the userids as they passed them.
    invalid_lower = {u.lower() for u in str(body.get("invaliduser") or "").split("|") if u}
    return {
        "msgid": str(body.get("msgid") or ""),
        "sent_to": [u for u in recipients if u.lower() not in invalid_lower],
        "invalid_userids": [u for u in recipients if u.lower() in invalid_lower],
        "duplicate": False,
    }


def wecom_staff_message_send(*, userids: list[str], text: str, key: str | None = None) -> dict[str, Any]:
    """Send `text` as a WeCom application message (msgtype text, from app WECOM_AGENT_ID) to the staff
    members `userids` (WeCom UserIDs), with WeCom's duplicate check on (an identical request within 30
    minutes is not delivered again). Text longer than 2048 bytes is cut; blank userids and repeats are
    dropped.

    Returns `{"msgid": str, "sent_to": [userid, …], "invalid_userids": [userid, …], "duplicate": bool}`:
    userids WeCom does not know (or outside the app's visible range) are listed in `invalid_userids`,
    never raised, also when that is all of them (errcode 81013; `msgid` is then ""). With `key` (one per
    notification, e.g. `notification:<id>`) a second call with the same key within 30 minutes sends
    nothing and returns `duplicate: True` with the first call's msgid, sent_to and invalid_userids (empty
    while the first call is still in flight); a call that raised does not use its key up.

    Raises ValueError without a recipient, without text or with more than 1000 recipients;
    PermanentError (code `not_configured`) when wecom_staff_messages_configured() is False;
    RetryableError for what may pass (network, HTTP 5xx, -1 busy, 45009/45011/45033 limits, with
    `retry_after`); PermanentError `wecom_<errcode>` for any other errcode (e.g. 40056 a wrong agentid,
    301002 a secret of another app). An expired token is refreshed and the call made again once.
    Note WeCom silently drops more than 30 messages a minute from one app to one member."""
    recipients = list(dict.fromkeys(u.strip() for u in userids if u and u.strip()))
    content = _truncate(text.strip())
    if not recipients:
        raise ValueError("no WeCom userid to send to")
    if len(recipients) > MAX_RECIPIENTS:
        raise ValueError(f"at most {MAX_RECIPIENTS} WeCom userids per message")
    if not content:
        raise ValueError("no text to send")
    if not wecom_staff_messages_configured():
        raise PermanentError("WeCom application messages are not configured", code="not_configured")
    claim = _claim_key(key) if key else ""
    if claim and not cache.add(claim, {}, timeout=DUPLICATE_CHECK_SECONDS):
        first = cache.get(claim) or {}
        return {"msgid": "", "sent_to": [], "invalid_userids": [], **first, "duplicate": True}
    payload = {
        "touser": "|".join(recipients),
        "msgtype": "text",
        "agentid": int(settings.WECOM_AGENT_ID),
        "text": {"content": content},
        "enable_duplicate_check": 1,
        "duplicate_check_interval": DUPLICATE_CHECK_SECONDS,
    }
    try:
        body = wecom_agent_client().call("message/send", payload)
    except WecomError as exc:
        if exc.errcode == ALL_RECIPIENTS_INVALID:
            body = {"invaliduser": "|".join(recipients)}
        else:
            if claim:
                cache.delete(claim)
            raise PermanentError(str(exc), code=f"wecom_{exc.errcode}") from exc
    except Exception:
        if claim:
            cache.delete(claim)  # not sent: a retry with the same key may send it
        raise
    result = _result(recipients, body)
    if claim:
        cache.set(
            claim, {k: v for k, v in result.items() if k != "duplicate"}, timeout=DUPLICATE_CHECK_SECONDS
        )
    return result
