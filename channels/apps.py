from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChannelsConfig(AppConfig):
    # The label "channels" would clash with django-channels if a deployment ever adds it.
    name = "channels"
    label = "nurture_channels"
    verbose_name = _("Channels")
