"""What the WeCom and WeChat official-account server APIs share: `/cgi-bin/<path>` with an access token,
an `errcode` in every (HTTP 200) answer, the token cached in Redis behind a lock (`channels.tokens`),
dropped and fetched again once when refused (40001, 40014, 42001). Network errors, 5xx, 429 and bodies
that are not JSON are RetryableError; errcodes in `retry_after` RetryableError with that wait; any other
non-zero errcode the client's `error` class, which the caller maps."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from channels.adapters.base import RetryableError
from channels.tokens import token_get, token_invalidate

# The token is expired, invalid, or was replaced by a newer one: fetch another and try once more.
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})


class CgiBinError(Exception):
    """The platform answered a non-zero errcode that retrying will not fix."""

    label: ClassVar[str] = "cgi-bin"

    def __init__(self, errcode: int, errmsg: str = "", *, path: str = "") -> None:
        super().__init__(f"{self.label} {path}: errcode {errcode} {errmsg}".strip())
        self.errcode = errcode
        self.errmsg = errmsg
        self.path = path


class CgiBinClient:
    label: ClassVar[str] = "cgi-bin"
    # errcode → seconds to wait before trying again.
    retry_after: ClassVar[dict[int, float]] = {}
    error: ClassVar[type[CgiBinError]] = CgiBinError
    # A token refused again right after a refresh: None raises `error`, a number retries after it.
    token_refused_again: ClassVar[float | None] = None
    token_key: str
    _http: httpx.Client

    def access_token(self) -> str:
        """The cached access token, fetched once when missing."""
        return token_get(key=self.token_key, fetch=self._fetch_token)

    def _fetch_token(self) -> tuple[str, int]:  # pragma: no cover - each platform has its own
        raise NotImplementedError

    def _call(
        self, method: str, path: str, payload: dict[str, Any] | None, params: dict[str, Any] | None
    ) -> dict[str, Any]:
        """`path` with the access token; the body when errcode is 0."""
        for attempt in range(2):
            token = self.access_token()
            body = self._request(method, path, payload, {**(params or {}), "access_token": token})
            if int(body.get("errcode") or 0) in TOKEN_ERRCODES and attempt == 0:
                token_invalidate(key=self.token_key, token=token)
                continue
            self._raise_for(body, path)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self, method: str, path: str, payload: dict[str, Any] | None, params: dict[str, Any]
    ) -> httpx.Response:
        return self._http.request(method.upper(), path, params=params, json=payload)

    def _request(
        self, method: str, path: str, payload: dict[str, Any] | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            response = self._send(method, path, payload, params)
        except httpx.TransportError as exc:
            raise RetryableError(f"{self.label} {path}: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise RetryableError(f"{self.label} {path}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise RetryableError(f"{self.label} {path}: HTTP {response.status_code}, not JSON") from exc
        if not isinstance(body, dict):
            raise RetryableError(f"{self.label} {path}: unexpected body")
        return body

    def _raise_for(self, body: dict[str, Any], path: str) -> None:
        errcode = int(body.get("errcode") or 0)
        if errcode == 0:
            return
        errmsg = str(body.get("errmsg") or "")
        wait = self.retry_after.get(errcode)
        if wait is None and errcode in TOKEN_ERRCODES:
            wait = self.token_refused_again
        if wait is not None:
            raise RetryableError(f"{self.label} {path}: errcode {errcode} {errmsg}", retry_after=wait)
        raise self.error(errcode, errmsg, path=path)

    def close(self) -> None:
        self._http.close()
