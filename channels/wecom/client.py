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

from channels.cgi_client import TOKEN_ERRCODES, CgiBinClient, CgiBinError

__all__ = ["TOKEN_ERRCODES", "WecomClient", "WecomError", "wecom_agent_client", "wecom_client"]

# Retry later (seconds): -1 system busy; 45009 API frequency limit; 45011 per-minute API limit;
# 45033 too many concurrent calls.
RETRY_AFTER = {-1: 2.0, 45009: 60.0, 45011: 60.0, 45033: 1.0}


class WecomError(CgiBinError):
    """WeCom answered a non-zero errcode that retrying will not fix."""

    label = "WeCom"


class WecomClient(CgiBinClient):
    """One corp and secret (the 客户联系 secret, or an app's); thread-safe, keeps its connections."""

    label = "WeCom"
    retry_after = RETRY_AFTER
    error = WecomError

    def __init__(self, *, base_url: str, corp_id: str, secret: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.corp_id = corp_id
        self._secret = secret
        # Two secrets of one corp have two tokens; the key names the secret by a short hash only.
        digest = hashlib.sha256(secret.encode()).hexdigest()[:12]
        self.token_key = f"wecom:token:{corp_id}:{digest}"
        self._http = httpx.Client(base_url=f"{self.base_url}/cgi-bin/", timeout=timeout)

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
        return self._call(method, path, payload, params)


@cache
def _client(base_url: str, corp_id: str, secret: str) -> WecomClient:
    return WecomClient(base_url=base_url, corp_id=corp_id, secret=secret)


def wecom_client() -> WecomClient:
    """The client of the configured corp (WECOM_API_BASE, WECOM_CORP_ID, WECOM_SECRET)."""
    return _client(settings.WECOM_API_BASE, settings.WECOM_CORP_ID, settings.WECOM_SECRET)


def wecom_agent_client() -> WecomClient:
    """The client of the configured self-built app (WECOM_API_BASE, WECOM_CORP_ID, WECOM_AGENT_SECRET):
    application messages need the app's own token, not the 客户联系 one."""
    return _client(settings.WECOM_API_BASE, settings.WECOM_CORP_ID, settings.WECOM_AGENT_SECRET)
