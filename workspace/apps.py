from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WorkspaceConfig(AppConfig):
    name = "workspace"
    verbose_name = _("SDR workspace")

    def ready(self) -> None:
        # Notes, calls and assignments join the lead's timeline.
        from workspace import selectors  # noqa: F401
