from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ContentConfig(AppConfig):
    name = "content"
    verbose_name = _("Content")

    def ready(self) -> None:
        # Registers how a lead merge folds links and viewers (unique per lead) into the survivor's.
        from content import merge  # noqa: F401
