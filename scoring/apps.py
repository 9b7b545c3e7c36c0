from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ScoringConfig(AppConfig):
    name = "scoring"
    verbose_name = _("Scoring")

    def ready(self) -> None:
        from leads.pools import dirty_leads_register
        from scoring.services import scores_update_dirty

        # Dirty leads are rescored in the pools' incremental evaluation, before the pools read scores.
        dirty_leads_register(scores_update_dirty)
