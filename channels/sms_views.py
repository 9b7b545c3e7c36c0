"""The SMS providers' push endpoints: delivery receipts and replies (Aliyun, Tencent Cloud).

The providers sign none of these pushes, so each URL carries a secret (`?token=SMS_RECEIPT_TOKEN`, set
with the URL in the provider's console); without it: 403 and nothing stored. Each answers the body its
provider expects once the items are stored and acted on; a failure answers 500 so the provider pushes
again (a stored, unprocessed item is then processed; a processed one is not acted on twice).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.utils.timezone import now as timezone_now
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels.sms import ALIYUN, TENCENT, sms_receipts_record, sms_replies_record

logger = logging.getLogger(__name__)

ALIYUN_OK = {"code": 0, "msg": "成功"}
TENCENT_OK = {"result": 0, "errmsg": "OK"}


def _token_ok(request: HttpRequest) -> bool:
    expected = settings.SMS_RECEIPT_TOKEN
    given = request.GET.get("token", "")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _items(request: HttpRequest) -> list[dict[str, Any]] | None:
    """The pushed JSON: a list of objects, or one object (Tencent's reply callback)."""
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        return None
    return body


Record = Callable[..., int]


def _push_view(*, source: str, record: Record, ok: dict[str, Any], name: str) -> Callable[..., HttpResponse]:
    @csrf_exempt
    @require_POST
    def view(request: HttpRequest) -> HttpResponse:
        if not _token_ok(request):
            return HttpResponseForbidden("bad token")
        items = _items(request)
        if items is None:
            bad = {"code": 1, "msg": "bad json"} if source == ALIYUN else {"result": 1, "errmsg": "bad json"}
            return JsonResponse(bad, status=400)
        raw = request.body.decode("utf-8", errors="replace")
        try:
            record(source=source, items=items, raw=raw, now=timezone_now())
        except Exception:
            logger.exception("%s push failed; the provider will push it again", name)
            fail = {"code": 1, "msg": "error"} if source == ALIYUN else {"result": 1, "errmsg": "error"}
            return JsonResponse(fail, status=500)
        return JsonResponse(ok, json_dumps_params={"ensure_ascii": False})

    view.__name__ = name
    view.__doc__ = f"{name}: a push from the provider, stored and acted on once."
    return view


aliyun_report_view = _push_view(
    source=ALIYUN, record=sms_receipts_record, ok=ALIYUN_OK, name="aliyun_report_view"
)
aliyun_reply_view = _push_view(
    source=ALIYUN, record=sms_replies_record, ok=ALIYUN_OK, name="aliyun_reply_view"
)
tencent_report_view = _push_view(
    source=TENCENT, record=sms_receipts_record, ok=TENCENT_OK, name="tencent_report_view"
)
tencent_reply_view = _push_view(
    source=TENCENT, record=sms_replies_record, ok=TENCENT_OK, name="tencent_reply_view"
)
