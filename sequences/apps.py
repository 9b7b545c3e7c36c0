from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SequencesConfig(AppConfig):
    name = "sequences"
    verbose_name = _("Sequences")

    def ready(self) -> None:
        from sequences import selectors  # noqa: F401  (registers the touches on the lead timeline)
