"""Log-in throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username from one
address, that username is refused there even with the right password; another username still logs in."""

import pytest
from django.conf import settings

from tests.workspace.conftest import PASSWORD, member

pytestmark = pytest.mark.django_db

LOGIN = "/workspace/login/"
ADDRESS = "203.0.113.7"


def _log_in(client, username: str, password: str):
    return client.post(
        LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ADDRESS, HTTP_ACCEPT_LANGUAGE="en"
    )


def test_the_right_password_logs_in_and_opens_the_queue(client):
    member("sdr_a", "sdr")
    response = _log_in(client, "sdr_a", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/workspace/"
    assert client.get("/workspace/").status_code == 200


def test_a_wrong_password_shows_the_form_again(client):
    member("sdr_a", "sdr")
    response = _log_in(client, "sdr_a", "wrong")
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_after_the_failure_limit_even_the_right_password_is_refused(client):
    member("sdr_a", "sdr")
    member("sdr_b", "sdr")
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _log_in(client, "sdr_a", "guess").status_code == 200
    assert _log_in(client, "sdr_a", "guess").status_code == 429  # the fifth failure locks

    response = _log_in(client, "sdr_a", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed log-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert client.get("/workspace/").status_code == 302  # still sent to the log-in page

    # The lock-out is per username and address: a colleague at the same office logs in.
    response = _log_in(client, "sdr_b", PASSWORD)
    assert response.status_code == 302
    assert client.get("/workspace/").status_code == 200


def test_failures_below_the_limit_do_not_lock_out(client):
    member("sdr_a", "sdr")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _log_in(client, "sdr_a", "guess")
    assert _log_in(client, "sdr_a", PASSWORD).status_code == 302
