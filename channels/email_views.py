"""Email pages and hooks: the one-click unsubscribe link `/u/<token>/` and the bounce webhook."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.timezone import now as timezone_now
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from channels.email import (
    BOUNCE_TYPES,
    Bounce,
    email_bounces_record,
    lead_unsubscribe,
    unsubscribe_token_read,
)

logger = logging.getLogger(__name__)


# The form's POST and the RFC 8058 one-click POST a mail client sends (`List-Unsubscribe=One-Click`, no
# cookie, no CSRF token) both unsubscribe; the signed token in the URL is what authorises it. GET only
# shows the confirmation, so link scanners that follow every URL unsubscribe nobody.
@never_cache
@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    """Confirm (GET) and record (POST) the opt-out of the channel the token names; bad token: 400."""
    read = unsubscribe_token_read(token=token)
    if read is None:
        return render(request, "channels/unsubscribe.html", {"invalid": True}, status=400)
    lead_id, channel = read
    if request.method == "POST":
        lead_unsubscribe(lead_id=lead_id, channel=channel, now=timezone_now())
        return render(request, "channels/unsubscribe.html", {"done": True, "channel": channel})
    return render(request, "channels/unsubscribe.html", {"channel": channel})


def _authorised(request: HttpRequest) -> bool:
    secret = settings.EMAIL_WEBHOOK_SECRET
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return bool(secret) and scheme == "Token" and hmac.compare_digest(given.strip().encode(), secret.encode())


def _bounces(body: Any) -> list[Bounce] | None:
    items = body if isinstance(body, list) else [body]
    bounces = []
    for item in items:
        if not isinstance(item, dict):
            return None
        email, kind, message_id = item.get("email"), item.get("type"), item.get("message_id") or ""
        if not isinstance(email, str) or "@" not in email or kind not in BOUNCE_TYPES:
            return None
        if not isinstance(message_id, str):
            return None
        bounces.append(Bounce(email=email, kind=kind, message_id=message_id))
    return bounces


@csrf_exempt
@require_POST
def email_bounces_view(request: HttpRequest) -> HttpResponse:
    """`POST /channels/email/bounces/` (Authorization: Token EMAIL_WEBHOOK_SECRET): one bounce
    {"email", "message_id"?, "type": "hard"|"soft"|"complaint"} or a list of them."""
    if not _authorised(request):
        return JsonResponse({"detail": "bad or missing token"}, status=401)
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"detail": "body is not JSON"}, status=400)
    bounces = _bounces(body)
    if not bounces:
        expected = 'expected {"email", "message_id"?, "type": "hard"|"soft"|"complaint"} or a list of them'
        return JsonResponse({"detail": expected}, status=400)
    raw = request.body.decode("utf-8", errors="replace")
    recorded = email_bounces_record(bounces=bounces, raw=raw, now=timezone_now())
    return JsonResponse({"received": len(bounces), "recorded": recorded})
