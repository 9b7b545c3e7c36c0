"""No input gives a 500: schemathesis generates requests from the OpenAPI schema for every operation."""

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, status_code_conformance

from leads.auth import api_key_create
from nurture.wsgi import application

# Bounded so CI stays fast.
MAX_EXAMPLES = 25


@pytest.fixture
def api_schema(db):
    # As Django's test client does: the test's connection must survive the end of each request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def api_key(db):
    _, plain = api_key_create(name="schemathesis", scopes=["read", "write"])
    return plain


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_server_error(case, api_key):
    from django.core.cache import cache

    cache.clear()  # the per-key throttle must not turn the fuzzing into 429s
    case.call_and_validate(
        headers={"Authorization": f"Token {api_key}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance],
    )
