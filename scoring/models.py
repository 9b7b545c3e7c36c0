"""Scoring: fit and behaviour rules, the ledger of points earned by events, each lead's score, grade and
temperature, and the thresholds that turn a score into hot/warm/cold."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from leads.models import Event, Lead, Temperature


class Grade(models.TextChoices):
    A = "A", _("A: ideal fit")
    B = "B", _("B: good fit")
    C = "C", _("C: weak fit")
    D = "D", _("D: poor fit")


class ScoringRule(models.Model):
    """One line of the marketing–sales agreement: a fit predicate or a behaviour, worth points.

    Fit rules score who the lead is (a rule-language predicate on its attributes, tags or pools) and
    count once while the lead matches. Behaviour rules score what it does: every event of `event_type`
    (with the `where` properties) earns `points`, at most `cap_per_day` a local day and `cap_total` in
    all, and with a half-life the points fade (10 points with a 30-day half-life are worth 5 a month on).
    """

    class Kind(models.TextChoices):
        FIT = "fit", _("fit (who the lead is)")
        BEHAVIOUR = "behaviour", _("behaviour (what the lead does)")

    name = models.CharField(_("name"), max_length=100)
    kind = models.CharField(_("kind"), max_length=12, choices=Kind.choices)
    points = models.IntegerField(
        _("points"),
        validators=[MinValueValidator(-1000), MaxValueValidator(1000)],
        help_text=_("Negative points lower the score (e.g. an unsubscribe)"),
    )
    rule = models.JSONField(
        _("predicate"),
        null=True,
        blank=True,
        help_text=_("Fit rules: the rule language of DESIGN.md, as JSON"),
    )
    event_type = models.CharField(
        _("event type"), max_length=64, blank=True, default="", help_text=_("Behaviour rules")
    )
    where = models.JSONField(
        _("event properties"),
        default=dict,
        blank=True,
        help_text=_('Behaviour rules: only events with these properties, e.g. {"form": "whitepaper"}'),
    )
    cap_per_day = models.PositiveIntegerField(
        _("cap per day"), null=True, blank=True, help_text=_("At most this many points a local day")
    )
    cap_total = models.PositiveIntegerField(
        _("cap in total"), null=True, blank=True, help_text=_("At most this many points in all")
    )
    half_life_days = models.PositiveIntegerField(
        _("half-life (days)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Points halve every this many days; empty = they never fade"),
    )
    description = models.CharField(_("description"), max_length=255, blank=True, default="")
    active = models.BooleanField(_("active"), default=True)
    position = models.PositiveSmallIntegerField(_("position"), default=100)
    changed_at = models.DateTimeField(_("scoring changed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("scoring rule")
        verbose_name_plural = _("scoring rules")
        ordering = ["kind", "position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="fit") | Q(rule__isnull=False), name="scoringrule_fit_has_rule"
            ),
            models.CheckConstraint(
                condition=~Q(kind="behaviour") | ~Q(event_type=""), name="scoringrule_behaviour_has_event"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.points:+d})"


class ScoreEntry(models.Model):
    """The ledger: one event a behaviour rule counts, with what it earns after caps (before decay).

    What an entry earns is worked out when scores are computed, from the rule as it is then
    (`scoring.services.entry_points_sql`): `n` is the event's place among the rule's events of the
    lead's local day, so the rule's points and day cap give its share, and editing either rescores
    without rewriting a ledger entry. A rule with a cap in total depends on every earlier event
    (a running sum), so its entries keep the points computed when they were written (`points`), and
    editing its points or caps rewrites them. `n` is empty on entries written before it existed: they
    count their `points` until the next rebuild (due by migration 0005).
    """

    # No foreign-key constraints in the database: a rebuild writes millions of entries, and checking three
    # constraints per row at commit took longer than writing them. Deletes cascade in the ORM as usual.
    # Nor indexes of their own: `scoreentry_lead_at` leads with the lead, `scoreentry_rule_event` with
    # the rule (each index is written for every entry of a rebuild).
    lead = models.ForeignKey(
        Lead, on_delete=models.CASCADE, related_name="score_entries", db_constraint=False, db_index=False
    )
    rule = models.ForeignKey(
        ScoringRule, on_delete=models.CASCADE, related_name="entries", db_constraint=False, db_index=False
    )
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    points = models.IntegerField(
        _("points"), help_text=_("after caps, as computed when the entry was written")
    )
    n = models.PositiveIntegerField(
        _("event of the day"),
        null=True,
        blank=True,
        help_text=_("its place among the rule's events of that day"),
    )
    at = models.DateTimeField(_("earned at"))

    class Meta:
        verbose_name = _("score entry")
        verbose_name_plural = _("score entries")
        constraints = [models.UniqueConstraint(fields=["rule", "event"], name="scoreentry_rule_event")]
        indexes = [models.Index(fields=["lead", "at"], name="scoreentry_lead_at")]

    def __str__(self) -> str:
        return f"{self.lead_id} {self.points:+d} @ {self.at:%Y-%m-%d}"


class LeadScore(models.Model):
    """A lead's score as of the last computation; `score` and `temperature` are copied onto the lead."""

    lead = models.OneToOneField(Lead, on_delete=models.CASCADE, primary_key=True, related_name="scoring")
    fit = models.IntegerField(_("fit score"), default=0)
    engagement = models.FloatField(_("engagement score (decayed)"), default=0)
    score = models.IntegerField(_("score"), default=0)
    grade = models.CharField(_("grade"), max_length=1, choices=Grade.choices, default=Grade.D)
    temperature = models.CharField(
        _("temperature"), max_length=8, choices=Temperature.choices, default=Temperature.COLD
    )
    computed_at = models.DateTimeField(_("computed as of"))
    hot_since = models.DateTimeField(_("hot since"), null=True, blank=True)

    class Meta:
        verbose_name = _("lead score")
        verbose_name_plural = _("lead scores")
        indexes = [models.Index(fields=["grade"], name="leadscore_grade")]

    def __str__(self) -> str:
        return f"{self.lead_id}: {self.score} {self.grade} {self.temperature}"


class ScoringSettings(models.Model):
    """The thresholds (one row, editable in the admin): temperature from the score, grade from fit."""

    hot_score = models.IntegerField(_("hot from score"), default=80)
    warm_score = models.IntegerField(_("warm from score"), default=45)
    hot_min_engagement = models.IntegerField(
        _("hot needs engagement of at least"),
        default=20,
        help_text=_("A perfect fit that never did anything is not hot"),
    )
    grade_a = models.IntegerField(_("grade A from fit"), default=40)
    grade_b = models.IntegerField(_("grade B from fit"), default=25)
    grade_c = models.IntegerField(_("grade C from fit"), default=10)
    rules_changed_at = models.DateTimeField(_("scoring rules changed at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("scoring thresholds")
        verbose_name_plural = _("scoring thresholds")
        constraints = [
            models.CheckConstraint(
                condition=Q(hot_score__gt=models.F("warm_score")), name="scoring_hot_gt_warm"
            ),
            models.CheckConstraint(
                condition=Q(grade_a__gt=models.F("grade_b")) & Q(grade_b__gt=models.F("grade_c")),
                name="scoring_grades_ordered",
            ),
        ]

    def __str__(self) -> str:
        return str(_("scoring thresholds"))


class ScoreRun(models.Model):
    """One recomputation: of the leads marked dirty, of everyone (nightly or after a change)."""

    class Kind(models.TextChoices):
        FULL = "full", _("full")
        INCREMENTAL = "incremental", _("incremental")

    kind = models.CharField(_("kind"), max_length=12, choices=Kind.choices)
    started_at = models.DateTimeField(_("started at"))
    now = models.DateTimeField(_("as of"))
    seconds = models.FloatField(_("duration (s)"))
    leads = models.IntegerField(_("leads scored"))
    changed = models.IntegerField(_("scores changed"))
    became_hot = models.IntegerField(_("became hot"))
    ledger_rebuilt = models.BooleanField(_("ledger rebuilt"), default=False)

    class Meta:
        verbose_name = _("score computation")
        verbose_name_plural = _("score computations")
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["kind", "started_at"], name="scorerun_kind_at")]

    def __str__(self) -> str:
        return f"{self.kind} {self.started_at:%Y-%m-%d %H:%M}"
