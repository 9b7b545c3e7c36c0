"""Fixtures of the channel tests: fake providers on real local HTTP servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.channels.fake_wecom import FakeWecom
from tests.fakeserver import FakeProvider


def _forget_wecom_tokens() -> None:
    from django.conf import settings

    from channels.tokens import tokens_reset
    from channels.wecom.client import _client

    tokens_reset()
    _client.cache_clear()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(match="wecom:token:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def fake_wecom(settings) -> Iterator[FakeWecom]:
    """A fake WeCom the settings point at (WECOM_API_BASE, WECOM_CORP_ID, WECOM_SECRET); adapters and
    cached tokens are forgotten before and after."""
    from channels.registry import adapters_reset

    with FakeProvider() as provider:
        fake = FakeWecom(provider)
        settings.WECOM_API_BASE = fake.url
        settings.WECOM_CORP_ID = fake.corp_id
        settings.WECOM_SECRET = fake.secret
        adapters_reset()
        _forget_wecom_tokens()
        yield fake
        adapters_reset()
        _forget_wecom_tokens()


@pytest.fixture(autouse=True)
def _webhooks_may_reach_the_local_fakes(settings):
    # The test receivers listen on 127.0.0.1, which a real subscription may not name (see
    # test_webhooks_api.py's refusals, which switch this off again).
    settings.NURTURE_WEBHOOK_ALLOW_PRIVATE = True
