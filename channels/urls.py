"""Inbound endpoints of the channels (mounted at /channels/): provider callbacks, receipts, bounces."""

from django.urls import include, path

from channels import email_views, sms_views
from channels.wechat_oa.callbacks import wechat_oa_callback
from channels.wecom.callbacks import wecom_callback

app_name = "channels"

urlpatterns: list = [
    path("wecom/callback/", wecom_callback, name="wecom-callback"),
    path("wechat/callback/", wechat_oa_callback, name="wechat-callback"),
    path("sms/aliyun/report/", sms_views.aliyun_report_view, name="sms-aliyun-report"),
    path("sms/aliyun/reply/", sms_views.aliyun_reply_view, name="sms-aliyun-reply"),
    path("sms/tencent/report/", sms_views.tencent_report_view, name="sms-tencent-report"),
    path("sms/tencent/reply/", sms_views.tencent_reply_view, name="sms-tencent-reply"),
    path("email/bounces/", email_views.email_bounces_view, name="email-bounces"),
    path("email/anymail/", include("anymail.urls")),  # ESPs' tracking webhooks → channels.email receiver
]
