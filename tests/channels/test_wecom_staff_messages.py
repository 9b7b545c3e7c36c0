"""Application messages to staff (`message/send`, channels.wecom.staff_messages) against the fake WeCom over
real HTTP: the body WeCom gets, unknown userids reported, the app's own token, and typed errors."""

from __future__ import annotations

import uuid

import pytest

from channels.adapters.base import PermanentError, RetryableError
from channels.wecom.client import wecom_client
from channels.wecom.staff_messages import wecom_staff_message_send, wecom_staff_messages_configured


@pytest.fixture
def wecom_app(fake_wecom, settings):
    """The fake WeCom with its self-built app configured (WECOM_AGENT_ID, WECOM_AGENT_SECRET)."""
    settings.WECOM_AGENT_ID = fake_wecom.agent_id
    settings.WECOM_AGENT_SECRET = fake_wecom.agent_secret
    fake_wecom.add_staff("zhangsan", "lisi")
    return fake_wecom


def test_the_message_arrives_with_wecoms_text_body_and_the_apps_token(wecom_app):
    result = wecom_staff_message_send(
        userids=["zhangsan", "lisi"], text="新的热线索分配给您：上海某某科技 王经理"
    )
    assert wecom_app.inbox("zhangsan") == ["新的热线索分配给您：上海某某科技 王经理"]
    assert wecom_app.inbox("lisi") == ["新的热线索分配给您：上海某某科技 王经理"]
    (call,) = wecom_app.calls("message/send")
    assert call.method == "POST"
    assert call.json == {
        "touser": "zhangsan|lisi",
        "msgtype": "text",
        "agentid": wecom_app.agent_id,
        "text": {"content": "新的热线索分配给您：上海某某科技 王经理"},
        "enable_duplicate_check": 1,
        "duplicate_check_interval": 1800,
    }
    (fetch,) = wecom_app.calls("gettoken")
    assert fetch.query == {"corpid": wecom_app.corp_id, "corpsecret": wecom_app.agent_secret}
    assert result["sent_to"] == ["zhangsan", "lisi"]
    assert result["invalid_userids"] == []
    assert result["msgid"] == wecom_app.app_messages[0]["msgid"]
    assert result["duplicate"] is False


def test_the_app_and_the_customer_contact_api_keep_two_tokens(wecom_app):
    wecom_client().call("externalcontact/get_corp_tag_list", {})
    wecom_staff_message_send(userids=["zhangsan"], text="SLA 即将超时")
    secrets = [call.query["corpsecret"] for call in wecom_app.calls("gettoken")]
    assert secrets == [wecom_app.secret, wecom_app.agent_secret]
    assert wecom_app.inbox("zhangsan") == ["SLA 即将超时"]


def test_unknown_userids_are_reported_and_the_others_still_get_it(wecom_app):
    result = wecom_staff_message_send(userids=["zhangsan", "WangWu"], text="升级提醒")
    assert result["sent_to"] == ["zhangsan"]
    assert result["invalid_userids"] == ["WangWu"]  # as passed, though WeCom answers it in lower case
    assert wecom_app.inbox("zhangsan") == ["升级提醒"]
    assert wecom_app.inbox("WangWu") == []


def test_only_unknown_userids_are_reported_too_not_raised(wecom_app):
    result = wecom_staff_message_send(userids=["wangwu"], text="升级提醒")
    assert result == {"msgid": "", "sent_to": [], "invalid_userids": ["wangwu"], "duplicate": False}
    assert wecom_app.app_messages == []


def test_an_expired_token_is_refreshed_once(wecom_app):
    wecom_staff_message_send(userids=["zhangsan"], text="第一条")
    wecom_app.expire_tokens()
    result = wecom_staff_message_send(userids=["zhangsan"], text="第二条")
    assert result["sent_to"] == ["zhangsan"]
    assert wecom_app.inbox("zhangsan") == ["第一条", "第二条"]
    assert len(wecom_app.calls("gettoken")) == 2
    assert len(wecom_app.calls("message/send")) == 3  # refused once with 42001, then sent


@pytest.mark.parametrize(("errcode", "wait"), [(45009, 60.0), (-1, 2.0)])
def test_limits_and_busy_are_retryable(wecom_app, errcode, wait):
    wecom_app.fail("message/send", errcode)
    with pytest.raises(RetryableError) as caught:
        wecom_staff_message_send(userids=["zhangsan"], text="新的热线索")
    assert caught.value.retry_after == wait
    assert wecom_app.inbox("zhangsan") == []


def test_a_network_error_is_retryable(wecom_app, settings):
    settings.WECOM_API_BASE = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(RetryableError):
        wecom_staff_message_send(userids=["zhangsan"], text="新的热线索")


def test_a_wrong_agent_id_is_permanent(wecom_app, settings):
    settings.WECOM_AGENT_ID = wecom_app.agent_id + 1
    with pytest.raises(PermanentError) as caught:
        wecom_staff_message_send(userids=["zhangsan"], text="新的热线索")
    assert caught.value.code == "wecom_40056"
    assert wecom_app.inbox("zhangsan") == []


def test_the_customer_contact_secret_cannot_send_app_messages(wecom_app, settings):
    settings.WECOM_AGENT_SECRET = wecom_app.secret
    with pytest.raises(PermanentError) as caught:
        wecom_staff_message_send(userids=["zhangsan"], text="新的热线索")
    assert caught.value.code == "wecom_301002"


@pytest.mark.parametrize("name", ["WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_AGENT_SECRET"])
def test_without_any_of_the_three_settings_it_is_not_configured(wecom_app, settings, name):
    assert wecom_staff_messages_configured() is True
    setattr(settings, name, 0 if name == "WECOM_AGENT_ID" else "")
    assert wecom_staff_messages_configured() is False
    with pytest.raises(PermanentError) as caught:
        wecom_staff_message_send(userids=["zhangsan"], text="新的热线索")
    assert caught.value.code == "not_configured"
    assert wecom_app.calls("gettoken") == []
    assert wecom_app.calls("message/send") == []


def test_a_key_sends_once(wecom_app):
    key = f"notification:{uuid.uuid4()}"
    first = wecom_staff_message_send(userids=["zhangsan", "nobody"], text="新的热线索", key=key)
    again = wecom_staff_message_send(userids=["zhangsan", "nobody"], text="新的热线索", key=key)
    assert again == {**first, "duplicate": True}
    assert wecom_app.inbox("zhangsan") == ["新的热线索"]
    assert len(wecom_app.calls("message/send")) == 1


def test_a_key_is_not_used_up_by_a_failed_call(wecom_app):
    key = f"notification:{uuid.uuid4()}"
    wecom_app.fail("message/send", 45009)
    with pytest.raises(RetryableError):
        wecom_staff_message_send(userids=["zhangsan"], text="新的热线索", key=key)
    result = wecom_staff_message_send(userids=["zhangsan"], text="新的热线索", key=key)
    assert result["duplicate"] is False
    assert wecom_app.inbox("zhangsan") == ["新的热线索"]


def test_a_long_text_is_cut_to_2048_bytes_on_a_character_boundary(wecom_app):
    wecom_staff_message_send(userids=["zhangsan"], text="热" * 1000)  # 3000 bytes
    (received,) = wecom_app.inbox("zhangsan")
    assert received == "热" * 682  # 2046 bytes: the 683rd character would not fit


def test_no_recipient_or_no_text_is_a_programming_error(wecom_app):
    with pytest.raises(ValueError):
        wecom_staff_message_send(userids=["", " "], text="新的热线索")
    with pytest.raises(ValueError):
        wecom_staff_message_send(userids=["zhangsan"], text="  ")
    assert wecom_app.calls("message/send") == []
