"""Inbound endpoints of the channels (mounted at /channels/): provider callbacks, receipts, bounces."""

from django.urls import path  # noqa: F401 - the channels add their paths

app_name = "channels"

urlpatterns: list = [
    # Each channel adds its callbacks here, e.g.
    # path("wecom/callback/", wecom_callback_view, name="wecom-callback"),
]
