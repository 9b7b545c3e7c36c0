"""Demo: the default scoring model evaluated over the demo leads, as the first tick would."""

from __future__ import annotations

from leads.demo import DemoContext
from scoring.models import LeadScore
from scoring.services import scores_tick


def demo_scores_load(ctx: DemoContext) -> dict[str, int]:
    """Score every demo lead (the ledger built from its events) as of the demo's instant."""
    scores_tick(ctx.now)
    return {
        "hot leads": LeadScore.objects.filter(temperature="hot").count(),
        "warm leads": LeadScore.objects.filter(temperature="warm").count(),
    }
