"""A thin client of the WeCom server API (`/cgi-bin/...`): access token, errcodes, typed errors.

    body = wecom_client().call("externalcontact/add_msg_template", {...})

Every answer of WeCom is HTTP 200 with an `errcode`: 0 returns the body; an expired or invalid token
(40001, 40014, 42001) is dropped from the cache and the call retried once with a fresh one; frequency
limits and "system busy" raise RetryableError with a wait; network errors and 5xx RetryableError; any
other errcode WecomError, which the caller maps (e.g. 41051 for a welcome message already sent).
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any

import httpx
from django.conf import settings

from channels.adapters.base import RetryableError
from channels.tokens import token_get, token_invalidate

# The token is expired, invalid, or was replaced by a newer one: fetch another and try once more.
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
# Retry later (seconds): -1 system busy; 45009 API frequency limit; 45011 per-minute API limit;
# 45033 too many concurrent calls.
RETRY_AFTER = {-1: 2.0, 45009: 60.0, 45011: 60.0, 45033: 1.0}


class WecomError(Exception):
    """WeCom answered a non-zero errcode that retrying will not fix."""

    def __init__(self, errcode: int, errmsg: str = "", *, path: str = "") -> None:
        super().__init__(f"WeCom {path}: errcode {errcode} {errmsg}".strip())
        self.errcode = errcode
        self.errmsg = errmsg
        self.path = path


class WecomClient:
    """One corp and secret (the 客户联系 secret, or an app's); thread-safe, keeps its connections."""

    def __init__(self, *, base_url: str, corp_id: str, secret: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.corp_id = corp_id
        self._secret = secret
        # Two secrets of one corp have two tokens; the key names the secret by a short hash only.
        digest = hashlib.sha256(secret.encode()).hexdigest()[:12]
        self.token_key = f"wecom:token:{corp_id}:{digest}"
        self._http = httpx.Client(base_url=f"{self.base_url}/cgi-bin/", timeout=timeout)

    def access_token(self) -> str:
        """The cached access token, fetched with `gettoken` once when missing."""
        return token_get(key=self.token_key, fetch=self._fetch_token)

    def _fetch_token(self) -> tuple[str, int]:
        body = self._request("GET", "gettoken", None, {"corpid": self.corp_id, "corpsecret": self._secret})
        self._raise_for(body, "gettoken")
        return body["access_token"], int(body.get("expires_in") or 7200)

    def call(
        self,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        method: str = "POST",
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Call `/cgi-bin/<path>` with the access token; the body when errcode is 0."""
        for attempt in range(2):
            token = self.access_token()
            body = self._request(method, path, payload, {**(params or {}), "access_token": token})
            errcode = int(body.get("errcode") or 0)
            if errcode in TOKEN_ERRCODES and attempt == 0:
                token_invalidate(key=self.token_key, token=token)
                continue
            self._raise_for(body, path)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(
        self, method: str, path: str, payload: dict[str, Any] | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            response = self._http.request(method.upper(), path, params=params, json=payload)
        except httpx.TransportError as exc:
            raise RetryableError(f"WeCom {path}: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise RetryableError(f"WeCom {path}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise RetryableError(f"WeCom {path}: HTTP {response.status_code}, not JSON") from exc
        if not isinstance(body, dict):
            raise RetryableError(f"WeCom {path}: unexpected body")
        return body

    @staticmethod
    def _raise_for(body: dict[str, Any], path: str) -> None:
        errcode = int(body.get("errcode") or 0)
        if errcode == 0:
            return
        errmsg = str(body.get("errmsg") or "")
        if errcode in RETRY_AFTER:
            raise RetryableError(
                f"WeCom {path}: errcode {errcode} {errmsg}", retry_after=RETRY_AFTER[errcode]
            )
        raise WecomError(errcode, errmsg, path=path)

    def close(self) -> None:
        self._http.close()


@cache
def _client(base_url: str, corp_id: str, secret: str) -> WecomClient:
    return WecomClient(base_url=base_url, corp_id=corp_id, secret=secret)


def wecom_client() -> WecomClient:
    """The client of the configured corp (WECOM_API_BASE, WECOM_CORP_ID, WECOM_SECRET)."""
    return _client(settings.WECOM_API_BASE, settings.WECOM_CORP_ID, settings.WECOM_SECRET)
