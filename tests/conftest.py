from pathlib import Path

import pytest
from rest_framework.test import APIClient

from leads.auth import api_key_create


@pytest.fixture
def make_client(db):
    """An API client with a fresh key of the given scopes."""
    counter = {"n": 0}

    def make(scopes=("read", "write")) -> APIClient:
        counter["n"] += 1
        _, plain = api_key_create(name=f"test-key-{counter['n']}", scopes=list(scopes))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
        return client

    return make


@pytest.fixture
def api(make_client) -> APIClient:
    return make_client()


@pytest.fixture(autouse=True)
def _clear_cache():
    # Throttle counters live in the cache; every test starts with none.
    from django.core.cache import cache

    cache.clear()
    yield


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser(monkeypatch):
    """Headless Debian Chromium; a test opens its own contexts (viewport, locale) or takes `page`."""
    # Playwright's sync API runs an event loop in this thread; the ORM calls of fixtures are still safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    """A headless Chromium page with English as the browser language."""
    context = browser.new_context(locale="en-US")
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()
