"""WeCom (企业微信) 客户联系: our own thin API client (`client.py`)."""
