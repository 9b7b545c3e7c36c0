"""A fake official-account server API (`/cgi-bin/...`) on tests/fakeserver.FakeProvider: real HTTP,
the request shapes checked as WeChat checks them, real success and error bodies.

    fake = FakeWechatOa(provider)      # or: with fake_oa_running(settings) as fake (a test's fixture)
    fake.follow("oOPENID1")            # a user who follows the account
    fake.fail("message/custom/send", 45015)   # the next call answers 45015
    fake.expire_tokens()               # every token issued so far answers 40001
    fake.calls("message/template/send")[0].json

Template sends honour `client_msg_id` as WeChat does: the same openid and key a second time is not
sent again (the first msgid is answered).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.fakeserver import FakeProvider, Request

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40037: "invalid template_id",
    41001: "access_token missing",
    42001: "access_token expired",
    43004: "require subscribe",
    45009: "reach max api daily quota limit",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    47001: "data format error",
}


def error(errcode: int) -> dict[str, Any]:
    hint = uuid.uuid4().hex[:16]
    return {"errcode": errcode, "errmsg": f"{ERRMSG.get(errcode, 'error')} rid: {hint}"}


class FakeWechatOa:
    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.app_id = f"wx{uuid.uuid4().hex[:16]}"
        self.secret = uuid.uuid4().hex
        self.template_id = "TPL-" + uuid.uuid4().hex[:8]
        self.followers: set[str] = set()
        self.valid_tokens: set[str] = set()
        self.sent: dict[tuple[str, str], int] = {}  # (openid, client_msg_id) → msgid
        self.failures: dict[str, list[int]] = {}
        self._msgids = itertools.count(2_000_000_001)
        self._lock = threading.Lock()
        provider.route("POST", "/cgi-bin/stable_token", self._token)
        provider.route("POST", "/cgi-bin/message/template/send", self._template)
        provider.route("POST", "/cgi-bin/message/custom/send", self._custom)

    @property
    def url(self) -> str:
        return self.provider.url

    def follow(self, openid: str) -> None:
        self.followers.add(openid)

    def fail(self, path: str, *errcodes: int) -> None:
        """The next calls of `path` (below /cgi-bin/) answer these errcodes, in order."""
        self.failures.setdefault(path, []).extend(errcodes)

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def calls(self, path: str) -> list[Request]:
        return self.provider.calls(f"/cgi-bin/{path}")

    # Endpoints.

    def _token(self, request: Request) -> tuple:
        body = request.json or {}
        if body.get("grant_type") != "client_credential":
            return 200, error(47001)
        if body.get("appid") != self.app_id or body.get("secret") != self.secret:
            return 200, {"errcode": 40013, "errmsg": "invalid appid"}
        token = "ACCESS_TOKEN_" + uuid.uuid4().hex
        with self._lock:
            self.valid_tokens.add(token)
        return 200, {"access_token": token, "expires_in": 7200}

    def _checked(self, path: str, request: Request) -> dict[str, Any] | None:
        token = request.query.get("access_token")
        if not token:
            return error(41001)
        if token not in self.valid_tokens:
            return error(40001)
        with self._lock:
            queue = self.failures.get(path)
            if queue:
                return error(queue.pop(0))
        body = request.json
        if not isinstance(body, dict) or not body.get("touser"):
            return error(47001)
        if body["touser"] not in self.followers:
            return error(43004)
        return None

    def _template(self, request: Request) -> tuple:
        refused = self._checked("message/template/send", request)
        if refused is not None:
            return 200, refused
        body = request.json
        if body.get("template_id") != self.template_id:
            return 200, error(40037)
        data = body.get("data")
        if not isinstance(data, dict) or not all(isinstance(v, dict) and "value" in v for v in data.values()):
            return 200, error(47001)
        key = (body["touser"], str(body.get("client_msg_id") or uuid.uuid4()))
        with self._lock:
            if key not in self.sent:
                self.sent[key] = next(self._msgids)
            msgid = self.sent[key]
        return 200, {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def _custom(self, request: Request) -> tuple:
        refused = self._checked("message/custom/send", request)
        if refused is not None:
            return 200, refused
        body = request.json
        if body.get("msgtype") != "text" or not (body.get("text") or {}).get("content"):
            return 200, error(47001)
        return 200, {"errcode": 0, "errmsg": "ok"}


@contextmanager
def fake_oa_running(settings) -> Iterator[FakeWechatOa]:
    """A fake official account the settings point at, with a fresh app id (so no cached token of another
    test applies); the channel's adapter is `wechat_oa`, its fallback in tests `console`."""
    from channels.registry import adapters_reset
    from channels.tokens import tokens_reset
    from channels.wechat_oa.client import _client

    with FakeProvider() as provider:
        fake = FakeWechatOa(provider)
        settings.WECHAT_OA_API_BASE = fake.url
        settings.WECHAT_OA_APP_ID = fake.app_id
        settings.WECHAT_OA_SECRET = fake.secret
        settings.WECHAT_OA_TEMPLATE_ID = fake.template_id
        settings.WECHAT_OA_TEMPLATE_FIELDS = '{"thing1": "text:20", "thing2": "title", "remark": "谢谢关注"}'
        settings.WECHAT_OA_MODE = "auto"
        settings.NURTURE_CHANNEL_ADAPTERS = {
            "console": "channels.adapters.console.ConsoleAdapter",
            "wechat_oa": "channels.adapters.wechat_oa.WechatOaAdapter",
        }
        adapters_reset()
        tokens_reset()
        yield fake
        adapters_reset()
        tokens_reset()
        _client.cache_clear()
        if settings.REDIS_URL:
            import redis

            redis.Redis.from_url(settings.REDIS_URL).delete(f"wechat_oa:token:{fake.app_id}")
