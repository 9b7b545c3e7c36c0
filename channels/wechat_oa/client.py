"""A thin client of the official account's server API (`/cgi-bin/...`): access token, errcodes.

    body = wechat_oa_client().call("message/template/send", {...})

The access token comes from `stable_token` (it does not invalidate the token other systems of the same
account hold, as the classic `/cgi-bin/token` does) and is cached in Redis behind a lock
(`channels.tokens`). An expired or invalid token (40001, 40014, 42001) is dropped and the call retried
once with a fresh one (refused again: RetryableError); network errors, HTTP 5xx, -1 (system busy) and
45009 (API quota) raise RetryableError; any other non-zero errcode WechatOaError, which the adapter maps.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import httpx
from django.conf import settings

from channels.cgi_client import TOKEN_ERRCODES, CgiBinClient, CgiBinError

__all__ = ["TOKEN_ERRCODES", "WechatOaClient", "WechatOaError", "wechat_oa_client"]

# Retry later (seconds): -1 system busy; 45009 the account's daily API quota is used up.
RETRY_AFTER = {-1: 5.0, 45009: 3600.0}


class WechatOaError(CgiBinError):
    """The official account answered a non-zero errcode that retrying will not fix."""

    label = "WeChat OA"


class WechatOaClient(CgiBinClient):
    """One official account (app id and secret); thread-safe, keeps its connections."""

    label = "WeChat OA"
    retry_after = RETRY_AFTER
    error = WechatOaError
    token_refused_again = 60.0  # refused right after a refresh: WeChat's side, for now

    def __init__(self, *, base_url: str, app_id: str, secret: str, timeout: float = 10.0) -> None:
        self.app_id = app_id
        self._secret = secret
        self.token_key = f"wechat_oa:token:{app_id}"
        self._http = httpx.Client(base_url=f"{base_url.rstrip('/')}/cgi-bin/", timeout=timeout)

    def _fetch_token(self) -> tuple[str, int]:
        payload = {"grant_type": "client_credential", "appid": self.app_id, "secret": self._secret}
        body = self._request("POST", "stable_token", payload, {})
        self._raise_for(body, "stable_token")
        return str(body["access_token"]), int(body.get("expires_in") or 7200)

    def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `/cgi-bin/<path>` with the access token; the body when errcode is 0."""
        return self._call("POST", path, payload, None)

    def _send(
        self, method: str, path: str, payload: dict[str, Any] | None, params: dict[str, Any]
    ) -> httpx.Response:
        # Raw UTF-8, not \u escapes: what WeChat's own samples send.
        return self._http.request(
            method,
            path,
            params=params,
            content=json.dumps(payload or {}, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )


@cache
def _client(base_url: str, app_id: str, secret: str) -> WechatOaClient:
    return WechatOaClient(base_url=base_url, app_id=app_id, secret=secret)


def wechat_oa_client() -> WechatOaClient:
    """The client of the configured account (WECHAT_OA_API_BASE, WECHAT_OA_APP_ID, WECHAT_OA_SECRET)."""
    return _client(settings.WECHAT_OA_API_BASE, settings.WECHAT_OA_APP_ID, settings.WECHAT_OA_SECRET)
