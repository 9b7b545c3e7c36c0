"""The WeCom client against the fake WeCom over real HTTP: the access token (fetched once, cached until
a few minutes before it expires, refreshed on 40014/42001 and the call retried once, once for many
threads and processes), and how errcodes, HTTP errors and network errors surface."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings

from channels.adapters.base import RetryableError
from channels.tokens import token_get, token_invalidate, tokens_reset
from channels.wecom.client import WecomClient, WecomError, wecom_client

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


def tags(client: WecomClient) -> dict:
    return client.call("externalcontact/get_corp_tag_list", {})


def test_a_call_fetches_the_token_once_with_get_and_sends_it_as_access_token(fake_wecom):
    client = wecom_client()
    assert tags(client) == {"errcode": 0, "errmsg": "ok", "tag_group": []}
    assert tags(client)["errcode"] == 0
    (fetch,) = fake_wecom.calls("gettoken")
    assert fetch.method == "GET"
    assert fetch.query == {"corpid": fake_wecom.corp_id, "corpsecret": fake_wecom.secret}
    calls = fake_wecom.calls("externalcontact/get_corp_tag_list")
    assert len(calls) == 2
    assert all(c.method == "POST" and c.query["access_token"] in fake_wecom.tokens for c in calls)
    assert calls[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("break_token", "errcode"),
    [(lambda fake: fake.expire_tokens(), 42001), (lambda fake: fake.tokens.clear(), 40014)],
    ids=["expired-42001", "invalid-40014"],
)
def test_a_refused_token_is_refreshed_and_the_call_retried_once(fake_wecom, break_token, errcode):
    client = wecom_client()
    tags(client)
    break_token(fake_wecom)
    assert tags(client)["errcode"] == 0
    assert len(fake_wecom.calls("gettoken")) == 2
    first, retried = fake_wecom.calls("externalcontact/get_corp_tag_list")[1:]
    assert first.query["access_token"] != retried.query["access_token"]
    assert retried.query["access_token"] in fake_wecom.tokens
    # the next call uses the fresh token without fetching again
    tags(client)
    assert len(fake_wecom.calls("gettoken")) == 2


def test_a_token_refused_twice_is_an_error_not_a_loop(fake_wecom):
    client = wecom_client()
    fake_wecom.fail("externalcontact/get_corp_tag_list", 40014, times=5)
    with pytest.raises(WecomError) as caught:
        tags(client)
    assert caught.value.errcode == 40014
    assert len(fake_wecom.calls("externalcontact/get_corp_tag_list")) == 2
    assert len(fake_wecom.calls("gettoken")) == 2


def test_frequency_limit_and_system_busy_are_retryable_with_a_wait(fake_wecom):
    client = wecom_client()
    fake_wecom.fail("externalcontact/get_corp_tag_list", 45009)
    with pytest.raises(RetryableError) as caught:
        tags(client)
    assert caught.value.retry_after == 60
    assert "45009" in str(caught.value)
    fake_wecom.fail("externalcontact/get_corp_tag_list", -1)
    with pytest.raises(RetryableError) as caught:
        tags(client)
    assert 0 < caught.value.retry_after <= 5
    assert len(fake_wecom.calls("gettoken")) == 1  # no token was thrown away for it
    assert tags(client)["errcode"] == 0


def test_another_errcode_is_a_wecom_error_with_code_and_message(fake_wecom):
    client = wecom_client()
    code = fake_wecom.issue_welcome_code()
    welcome = {"welcome_code": code, "text": {"content": "您好"}}
    assert client.call("externalcontact/send_welcome_msg", welcome)["errcode"] == 0
    with pytest.raises(WecomError) as caught:
        client.call("externalcontact/send_welcome_msg", welcome)
    assert caught.value.errcode == 41051
    assert caught.value.errmsg.startswith("externaluser has started chatting")
    assert len(fake_wecom.calls("externalcontact/send_welcome_msg")) == 2  # not retried


def test_a_wrong_secret_is_a_wecom_error_from_gettoken(fake_wecom):
    client = WecomClient(base_url=fake_wecom.url, corp_id=fake_wecom.corp_id, secret="wrong")
    with pytest.raises(WecomError) as caught:
        tags(client)
    assert caught.value.errcode == 40001
    assert not fake_wecom.calls("externalcontact/get_corp_tag_list")


def test_http_5xx_and_network_errors_are_retryable(fake_wecom):
    client = wecom_client()
    tags(client)
    fake_wecom.provider.route(
        "POST", "/cgi-bin/externalcontact/mark_tag", lambda request: (502, "Bad Gateway")
    )
    with pytest.raises(RetryableError, match="HTTP 502"):
        client.call("externalcontact/mark_tag", {})
    dead = WecomClient(base_url="http://127.0.0.1:9", corp_id="c", secret="s", timeout=1)
    with pytest.raises(RetryableError):
        tags(dead)


def test_the_token_is_kept_until_a_few_minutes_before_it_expires(fake_wecom):
    client = wecom_client()
    if settings.REDIS_URL:
        import redis

        tags(client)
        ttl = redis.Redis.from_url(settings.REDIS_URL).ttl(client.token_key)
        assert 7200 - 600 <= ttl <= 7200 - 120
        return
    with time_machine.travel(time.time(), tick=False) as clock:
        tags(client)
        clock.shift(timedelta(seconds=7200 - 600))
        tags(client)
        assert len(fake_wecom.calls("gettoken")) == 1
        clock.shift(timedelta(seconds=480))  # 2 minutes before WeCom's expiry: fetched again
        fake_wecom.tokens = dict.fromkeys(fake_wecom.tokens, time.time() + 7200)
        tags(client)
        assert len(fake_wecom.calls("gettoken")) == 2


@pytest.mark.parametrize("cached", ["none", "expired"])
def test_eight_threads_needing_a_token_fetch_it_once(fake_wecom, cached):
    client = wecom_client()
    if cached == "expired":
        tags(client)
        fake_wecom.expire_tokens()
    fetched_before = len(fake_wecom.calls("gettoken"))
    fake_wecom.token_delay = 0.3  # every thread arrives while the first is still fetching
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            assert tags(client)["errcode"] == 0
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(fake_wecom.calls("gettoken")) - fetched_before == 1
    used = {c.query["access_token"] for c in fake_wecom.calls("externalcontact/get_corp_tag_list")}
    assert sum(1 for t in used if fake_wecom.tokens[t] > time.time()) == 1


def _process_call(url: str, corp_id: str, secret: str, start: float, out) -> None:  # type: ignore[no-untyped-def]
    from channels import tokens

    tokens._redis.cache_clear()  # a connection of this process, not the parent's
    client = WecomClient(base_url=url, corp_id=corp_id, secret=secret)
    time.sleep(max(0.0, start - time.time()))
    out.put(client.access_token())


@needs_redis
def test_two_processes_needing_a_token_fetch_it_once(fake_wecom):
    fake_wecom.token_delay = 0.3
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    start = time.time() + 0.5
    args = (fake_wecom.url, fake_wecom.corp_id, fake_wecom.secret, start, out)
    processes = [context.Process(target=_process_call, args=args) for _ in range(2)]
    for process in processes:
        process.start()
    tokens = {out.get(timeout=20) for _ in processes}
    for process in processes:
        process.join(timeout=20)
    assert len(tokens) == 1
    assert len(fake_wecom.calls("gettoken")) == 1


def test_a_late_invalidation_does_not_drop_the_fresh_token(fake_wecom):
    tokens_reset()
    fetched = iter([("old", 7200), ("new", 7200), ("newer", 7200)])
    key = "wecom:token:test-late"
    assert token_get(key=key, fetch=lambda: next(fetched)) == "old"
    token_invalidate(key=key, token="old")  # worker A saw 42001 and refreshed
    assert token_get(key=key, fetch=lambda: next(fetched)) == "new"
    token_invalidate(key=key, token="old")  # worker B, late, with the token it held
    assert token_get(key=key, fetch=lambda: next(fetched)) == "new"
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).delete(key)
