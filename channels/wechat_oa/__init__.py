"""The WeChat official account (公众号): its API client, the callback endpoint and what inbound payloads
do (subscribe, unsubscribe, messages, template-send receipts). The sending adapter is
`channels/adapters/wechat_oa.py`."""
