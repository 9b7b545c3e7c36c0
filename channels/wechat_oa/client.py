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

from channels.adapters.base import RetryableError
from channels.tokens import token_get, token_invalidate

TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
# Retry later (seconds): -1 system busy; 45009 the account's daily API quota is used up.
RETRY_AFTER = {-1: 5.0, 45009: 3600.0}


class WechatOaError(Exception):
    """The official account answered a non-zero errcode that retrying will not fix."""

    def __init__(self, errcode: int, errmsg: str = "", *, path: str = "") -> None:
        super().__init__(f"WeChat OA {path}: errcode {errcode} {errmsg}".strip())
        self.errcode = errcode
        self.errmsg = errmsg
        self.path = path


class WechatOaClient:
    """One official account (app id and secret); thread-safe, keeps its connections."""

    def __init__(self, *, base_url: str, app_id: str, secret: str, timeout: float = 10.0) -> None:
        self.app_id = app_id
        self._secret = secret
        self.token_key = f"wechat_oa:token:{app_id}"
        self._http = httpx.Client(base_url=f"{base_url.rstrip('/')}/cgi-bin/", timeout=timeout)

    def access_token(self) -> str:
        """The cached access token, fetched from `stable_token` once when missing."""
        return token_get(key=self.token_key, fetch=self._fetch_token)

    def _fetch_token(self) -> tuple[str, int]:
        payload = {"grant_type": "client_credential", "appid": self.app_id, "secret": self._secret}
        body = self._request("POST", "stable_token", payload, {})
        self._raise_for(body, "stable_token")
        return str(body["access_token"]), int(body.get("expires_in") or 7200)

    def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `/cgi-bin/<path>` with the access token; the body when errcode is 0."""
        for attempt in range(2):
            token = self.access_token()
            body = self._request("POST", path, payload, {"access_token": token})
            if int(body.get("errcode") or 0) in TOKEN_ERRCODES and attempt == 0:
                token_invalidate(key=self.token_key, token=token)
                continue
            self._raise_for(body, path)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(
        self, method: str, path: str, payload: dict[str, Any] | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            # Raw UTF-8, not \u escapes: what WeChat's own samples send.
            response = self._http.request(
                method,
                path,
                params=params,
                content=json.dumps(payload or {}, ensure_ascii=False).encode(),
                headers={"Content-Type": "application/json; charset=utf-8"},
            )
        except httpx.TransportError as exc:
            raise RetryableError(f"WeChat OA {path}: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise RetryableError(f"WeChat OA {path}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise RetryableError(f"WeChat OA {path}: HTTP {response.status_code}, not JSON") from exc
        if not isinstance(body, dict):
            raise RetryableError(f"WeChat OA {path}: unexpected body")
        return body

    @staticmethod
    def _raise_for(body: dict[str, Any], path: str) -> None:
        errcode = int(body.get("errcode") or 0)
        if errcode == 0:
            return
        errmsg = str(body.get("errmsg") or "")
        if errcode in TOKEN_ERRCODES:  # refused again right after a refresh: WeChat's side, for now
            raise RetryableError(f"WeChat OA {path}: errcode {errcode} {errmsg}", retry_after=60.0)
        if errcode in RETRY_AFTER:
            raise RetryableError(
                f"WeChat OA {path}: errcode {errcode} {errmsg}", retry_after=RETRY_AFTER[errcode]
            )
        raise WechatOaError(errcode, errmsg, path=path)


@cache
def _client(base_url: str, app_id: str, secret: str) -> WechatOaClient:
    return WechatOaClient(base_url=base_url, app_id=app_id, secret=secret)


def wechat_oa_client() -> WechatOaClient:
    """The client of the configured account (WECHAT_OA_API_BASE, WECHAT_OA_APP_ID, WECHAT_OA_SECRET)."""
    return _client(settings.WECHAT_OA_API_BASE, settings.WECHAT_OA_APP_ID, settings.WECHAT_OA_SECRET)
