"""The WeCom callback endpoint (CONTRACT §4): `GET/POST /channels/wecom/callback/`.

WeCom's protocol: every request carries `msg_signature`, `timestamp` and `nonce` in the query string;
the signature is SHA-1 over the token, the timestamp, the nonce and the encrypted text. GET verifies
the URL (the console's "save"): answer the decrypted `echostr` as plain text, within a second, without
touching the database. POST carries an XML envelope whose `Encrypt` element is the AES-256-CBC
encrypted payload, ending with the receive id (our corp id). A bad signature or another corp's payload
is refused with 403 and nothing is stored; a good one is stored (deduplicated) and answered "success"
at once, and a task acts on it.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import xmltodict
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.timezone import now as timezone_now
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException
from wechatpy.exceptions import InvalidSignatureException

from channels.wecom.inbound import wecom_payload_receive

logger = logging.getLogger(__name__)

# The signature or the receive id does not match: the request is not from WeCom for our corp.
_REFUSED = (InvalidSignatureException, InvalidCorpIdException)


@cache
def _crypto(token: str, aes_key: str, corp_id: str) -> WeChatCrypto | None:
    try:
        return WeChatCrypto(token, aes_key, corp_id)
    except (ValueError, AssertionError, TypeError):
        logger.error("WECOM_ENCODING_AES_KEY is not a 43-character base64 key")
        return None


def wecom_crypto() -> WeChatCrypto | None:
    """The callback crypto of the configured corp, or None when WECOM_TOKEN / WECOM_ENCODING_AES_KEY /
    WECOM_CORP_ID are missing or invalid."""
    token, aes_key, corp_id = settings.WECOM_TOKEN, settings.WECOM_ENCODING_AES_KEY, settings.WECOM_CORP_ID
    if not (token and aes_key and corp_id):
        return None
    return _crypto(token, aes_key, corp_id)


def _text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


def _envelope(raw: bytes) -> dict[str, Any] | None:
    """The outer XML of a POST (`<xml><ToUserName/><AgentID/><Encrypt/></xml>`), or None if malformed."""
    try:
        parsed = xmltodict.parse(raw, disable_entities=True)
    except Exception:
        return None
    envelope = parsed.get("xml") if isinstance(parsed, dict) else None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("Encrypt"), str):
        return None
    return envelope


def _payload(xml: str) -> dict[str, Any] | None:
    """The decrypted payload as a dict of strings (WeCom's elements), or None if it is not one."""
    try:
        parsed = xmltodict.parse(xml, disable_entities=True)
    except Exception:
        return None
    body = parsed.get("xml") if isinstance(parsed, dict) else None
    return body if isinstance(body, dict) else None


@csrf_exempt
@require_http_methods(["GET", "POST"])
def wecom_callback(request: HttpRequest) -> HttpResponse:
    """WeCom's URL verification (GET) and event delivery (POST)."""
    crypto = wecom_crypto()
    if crypto is None:
        return _text("WeCom callback is not configured", status=503)
    signature = request.GET.get("msg_signature", "")
    timestamp = request.GET.get("timestamp", "")
    nonce = request.GET.get("nonce", "")
    if request.method == "GET":
        try:
            echo = crypto.check_signature(signature, timestamp, nonce, request.GET.get("echostr", ""))
        except _REFUSED:
            return _text("forbidden", status=403)
        except Exception:
            return _text("bad request", status=400)
        return _text(echo)

    envelope = _envelope(request.body)
    if envelope is None:
        return _text("bad request", status=400)
    try:
        xml = crypto.decrypt_message({"Encrypt": envelope["Encrypt"]}, signature, timestamp, nonce)
    except _REFUSED:
        logger.warning("WeCom callback refused: bad signature or another corp's payload")
        return _text("forbidden", status=403)
    except Exception:
        return _text("bad request", status=400)
    body = _payload(xml)
    if body is None:
        return _text("bad request", status=400)
    wecom_payload_receive(body=body, raw=xml, now=timezone_now())
    return _text("success")
