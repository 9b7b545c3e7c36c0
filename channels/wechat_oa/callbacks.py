"""The official account's callback endpoint: `GET/POST /channels/wechat/callback/`.

WeChat signs every request: `signature` in the query string is SHA-1 over the sorted WECHAT_OA_TOKEN,
`timestamp` and `nonce`. GET is the URL verification of the console: a good signature is answered with
`echostr`. POST carries the XML message, in plaintext mode as is, in safe mode (`encrypt_type=aes`) as
an `Encrypt` element AES-encrypted with WECHAT_OA_ENCODING_AES_KEY and ending with our app id, signed
by `msg_signature` over the token, timestamp, nonce and the encrypted text (wechatpy's WeChatCrypto).
A bad signature or another account's payload gets 403 and nothing is stored; a good payload is stored
(deduplicated, so a replay changes nothing) and answered "success" at once, and a task acts on it.
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
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.utils import check_signature

from channels.wechat_oa.inbound import wechat_oa_payload_receive

logger = logging.getLogger(__name__)

_REFUSED = (InvalidSignatureException, InvalidAppIdException)


@cache
def _crypto(token: str, aes_key: str, app_id: str) -> WeChatCrypto | None:
    try:
        return WeChatCrypto(token, aes_key, app_id)
    except (ValueError, AssertionError, TypeError):
        logger.error("WECHAT_OA_ENCODING_AES_KEY is not a 43-character base64 key")
        return None


def wechat_oa_crypto() -> WeChatCrypto | None:
    """The safe-mode crypto of the configured account, or None without an AES key or app id."""
    token, aes_key, app_id = (
        settings.WECHAT_OA_TOKEN,
        settings.WECHAT_OA_ENCODING_AES_KEY,
        settings.WECHAT_OA_APP_ID,
    )
    if not (token and aes_key and app_id):
        return None
    return _crypto(token, aes_key, app_id)


def _text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


def _xml(raw: bytes | str) -> dict[str, Any] | None:
    """`<xml>…</xml>` as a dict of its elements, or None if it is not that."""
    try:
        parsed = xmltodict.parse(raw, disable_entities=True)
    except Exception:
        return None
    body = parsed.get("xml") if isinstance(parsed, dict) else None
    return body if isinstance(body, dict) else None


def _signed(token: str, signature: str, timestamp: str, nonce: str) -> bool:
    try:
        check_signature(token, signature, timestamp, nonce)
    except InvalidSignatureException:
        return False
    return True


@csrf_exempt
@require_http_methods(["GET", "POST"])
def wechat_oa_callback(request: HttpRequest) -> HttpResponse:
    """WeChat's URL verification (GET) and message and event delivery (POST)."""
    token = settings.WECHAT_OA_TOKEN
    if not token:
        return _text("WeChat official-account callback is not configured", status=503)
    query = request.GET
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if request.method == "GET":
        if not _signed(token, query.get("signature", ""), timestamp, nonce):
            return _text("forbidden", status=403)
        return _text(query.get("echostr", ""))

    if query.get("encrypt_type", "raw").lower() == "aes":
        crypto = wechat_oa_crypto()
        if crypto is None:
            return _text("safe mode needs WECHAT_OA_ENCODING_AES_KEY", status=503)
        envelope = _xml(request.body)
        if envelope is None or not isinstance(envelope.get("Encrypt"), str):
            return _text("bad request", status=400)
        try:
            raw = crypto.decrypt_message(
                {"Encrypt": envelope["Encrypt"]}, query.get("msg_signature", ""), timestamp, nonce
            )
        except _REFUSED:
            logger.warning("official-account callback refused: bad signature or another account's payload")
            return _text("forbidden", status=403)
        except Exception:
            return _text("bad request", status=400)
    else:
        if not _signed(token, query.get("signature", ""), timestamp, nonce):
            logger.warning("official-account callback refused: bad signature")
            return _text("forbidden", status=403)
        raw = request.body.decode("utf-8", errors="replace")
    body = _xml(raw)
    if body is None:
        return _text("bad request", status=400)
    wechat_oa_payload_receive(body=body, raw=raw, now=timezone_now())
    return _text("success")
