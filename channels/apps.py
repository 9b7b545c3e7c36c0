from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChannelsConfig(AppConfig):
    # The label "channels" would clash with django-channels if a deployment ever adds it.
    name = "channels"
    label = "nurture_channels"
    verbose_name = _("Channels")

    def ready(self) -> None:
        # The receiver of django-anymail's tracking signal (bounces) lives there: connect it at startup,
        # not only when the URLconf happens to import the module.
        from channels import email  # noqa: F401
