"""Leads and what is known about them: identities, tags, events, stage history, merges, API keys."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

# The identities of a lead, in the order upsert matches them (CONTRACT §3).
IDENTITY_FIELDS: tuple[str, ...] = (
    "external_id",
    "phone",
    "email",
    "wecom_external_userid",
    "wechat_unionid",
)


class Stage(models.TextChoices):
    RL = "rl", _("Raw lead")
    MIL = "mil", _("MIL (registered)")
    MQL = "mql", _("MQL")
    SQL = "sql", _("SQL")
    WON = "won", _("Won")
    LOST = "lost", _("Lost")
    RECYCLED = "recycled", _("Recycled")


class Temperature(models.TextChoices):
    HOT = "hot", _("Hot")
    WARM = "warm", _("Warm")
    COLD = "cold", _("Cold")


class Lead(models.Model):
    external_id = models.CharField(_("external id"), max_length=128, null=True, blank=True, unique=True)
    name = models.CharField(_("name"), max_length=128, blank=True, default="")
    company = models.CharField(_("company"), max_length=200, blank=True, default="")
    title = models.CharField(_("job title"), max_length=128, blank=True, default="")
    industry = models.CharField(_("industry"), max_length=64, blank=True, default="")
    company_size = models.CharField(_("company size"), max_length=32, blank=True, default="")
    phone = models.CharField(_("mobile phone"), max_length=20, null=True, blank=True, unique=True)
    email = models.EmailField(_("email"), max_length=254, null=True, blank=True, unique=True)
    wecom_external_userid = models.CharField(
        _("WeCom external user id"), max_length=128, null=True, blank=True, unique=True
    )
    wechat_unionid = models.CharField(_("WeChat unionid"), max_length=128, null=True, blank=True, unique=True)
    # The official account's openid (per account; unionid spans the company's apps).
    wechat_openid = models.CharField(_("WeChat openid"), max_length=128, null=True, blank=True, unique=True)
    # Last message, click or subscribe on the official account: opens its 48-hour service window.
    wechat_oa_interaction_at = models.DateTimeField(
        _("last official-account interaction"), null=True, blank=True
    )
    # The WeCom staff member (UserID) who has this customer as a contact and follows it up.
    wecom_follow_user = models.CharField(
        _("WeCom follow-up member"), max_length=64, blank=True, default="", db_default=""
    )
    source = models.CharField(_("source"), max_length=64, blank=True, default="")
    stage = models.CharField(_("stage"), max_length=16, choices=Stage.choices, default=Stage.RL)
    bant_budget = models.BooleanField(_("BANT: budget"), default=False)
    bant_authority = models.BooleanField(_("BANT: authority"), default=False)
    bant_need = models.BooleanField(_("BANT: need"), default=False)
    bant_timeline = models.BooleanField(_("BANT: timeline"), default=False)
    consent = models.BooleanField(_("consent to be contacted"), default=False)
    consent_at = models.DateTimeField(_("consent given at"), null=True, blank=True)
    consent_version = models.CharField(_("consent text version"), max_length=32, blank=True, default="")
    do_not_contact = models.BooleanField(_("do not contact"), default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner (SDR)"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_leads",
    )
    score = models.IntegerField(_("score"), default=0)
    temperature = models.CharField(
        _("temperature"), max_length=8, choices=Temperature.choices, default=Temperature.COLD
    )
    properties = models.JSONField(_("properties"), default=dict, blank=True)
    last_inbound_at = models.DateTimeField(_("last inbound signal"), null=True, blank=True)
    last_event_at = models.DateTimeField(_("last event"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("lead")
        verbose_name_plural = _("leads")
        indexes = [
            models.Index(fields=["updated_at", "id"], name="lead_updated_id"),
            models.Index(fields=["stage"], name="lead_stage"),
            # Not (temperature, score): score is rewritten for most leads every night (decay), and a column
            # in no index lets those updates stay on their page (HOT) instead of touching every index.
            models.Index(fields=["temperature"], name="lead_temperature"),
            models.Index(fields=["source"], name="lead_source"),
        ]

    def __str__(self) -> str:
        label = self.name or self.phone or self.email or self.external_id or "-"
        return f"#{self.pk} {label}" + (f" ({self.company})" if self.company else "")

    @property
    def bant(self) -> dict[str, bool]:
        return {
            "budget": self.bant_budget,
            "authority": self.bant_authority,
            "need": self.bant_need,
            "timeline": self.bant_timeline,
        }

    @property
    def bant_count(self) -> int:
        return sum(self.bant.values())

    def identities(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in IDENTITY_FIELDS if getattr(self, f)}


class Tag(models.Model):
    """A tag; `name` is the full `group:value` string that rules and the API use."""

    name = models.CharField(_("name"), max_length=128, unique=True)
    group = models.CharField(_("group"), max_length=32, blank=True, default="", db_index=True)
    label = models.CharField(_("label"), max_length=96)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("tag")
        verbose_name_plural = _("tags")
        ordering = ["group", "label"]

    def __str__(self) -> str:
        return self.name


class LeadTag(models.Model):
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="lead_tags")
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="lead_tags")
    count = models.PositiveIntegerField(_("count"), default=1)
    first_at = models.DateTimeField(_("first at"))
    last_at = models.DateTimeField(_("last at"))
    source = models.CharField(_("source"), max_length=64, blank=True, default="")

    class Meta:
        verbose_name = _("lead tag")
        verbose_name_plural = _("lead tags")
        constraints = [models.UniqueConstraint(fields=["lead", "tag"], name="leadtag_unique")]
        # The tag filter of the lead list walks (tag, lead) in lead order.
        indexes = [models.Index(fields=["tag", "lead"], name="leadtag_tag_lead")]

    def __str__(self) -> str:
        return f"{self.tag.name} ×{self.count}"


class Event(models.Model):
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(_("type"), max_length=64)
    occurred_at = models.DateTimeField(_("occurred at"))
    properties = models.JSONField(_("properties"), default=dict, blank=True)
    event_id = models.CharField(_("event id"), max_length=128, null=True, blank=True, unique=True)
    source = models.CharField(_("source"), max_length=64, blank=True, default="")
    created_at = models.DateTimeField(_("recorded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        indexes = [
            models.Index(fields=["lead", "type", "occurred_at"], name="event_lead_type_at"),
            models.Index(fields=["type", "occurred_at"], name="event_type_at"),
        ]

    def __str__(self) -> str:
        return f"{self.type} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class StageChange(models.Model):
    # No foreign-key constraint in the database and no index of its own (`stagechange_lead_at` leads with
    # the lead): the first evaluation of the MIL pool over an existing base writes one row per lead,
    # and the per-row check at commit cost more than the row. Deletes cascade in the ORM as usual.
    lead = models.ForeignKey(
        Lead, on_delete=models.CASCADE, related_name="stage_changes", db_constraint=False, db_index=False
    )
    from_stage = models.CharField(_("from"), max_length=16, choices=Stage.choices, blank=True, default="")
    to_stage = models.CharField(_("to"), max_length=16, choices=Stage.choices)
    reason = models.CharField(_("reason"), max_length=255, blank=True, default="")
    amount = models.DecimalField(_("amount"), max_digits=14, decimal_places=2, null=True, blank=True)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("by"), null=True, blank=True, on_delete=models.SET_NULL
    )
    actor = models.CharField(
        _("actor"), max_length=64, blank=True, default="", help_text=_("API key or system")
    )
    at = models.DateTimeField(_("at"))

    class Meta:
        verbose_name = _("stage change")
        verbose_name_plural = _("stage changes")
        indexes = [models.Index(fields=["lead", "at"], name="stagechange_lead_at")]

    def __str__(self) -> str:
        return f"{self.from_stage or '-'} → {self.to_stage}"


class LeadMerge(models.Model):
    """A lead folded into an older one; `merged_id` keeps resolving to the survivor."""

    survivor = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="merges")
    merged_id = models.BigIntegerField(_("merged lead id"), unique=True)
    identities = models.JSONField(_("identities of the merged lead"), default=dict)
    snapshot = models.JSONField(_("fields of the merged lead"), default=dict)
    why = models.CharField(_("why"), max_length=255)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("by"), null=True, blank=True, on_delete=models.SET_NULL
    )
    at = models.DateTimeField(_("at"))

    class Meta:
        verbose_name = _("lead merge")
        verbose_name_plural = _("lead merges")

    def __str__(self) -> str:
        return f"#{self.merged_id} → #{self.survivor_id}"


class ApiKey(models.Model):
    """An API key; only its SHA-256 digest is stored, the key itself is shown once."""

    class Scope(models.TextChoices):
        READ = "read", _("read")
        WRITE = "write", _("write")

    name = models.CharField(_("name"), max_length=100, unique=True)
    prefix = models.CharField(_("prefix"), max_length=12, db_index=True)
    digest = models.CharField(_("digest"), max_length=64, unique=True)
    scopes = models.JSONField(_("scopes"), default=list)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class KeywordTagRule(models.Model):
    """Bulk keyword tagging: leads whose company (or a property) contains any keyword get the tag."""

    class Field(models.TextChoices):
        COMPANY = "company", _("company name")
        TITLE = "title", _("job title")
        INDUSTRY = "industry", _("industry")
        PROPERTY = "property", _("a property")

    name = models.CharField(_("name"), max_length=100)
    field = models.CharField(_("field"), max_length=16, choices=Field.choices, default=Field.COMPANY)
    property_key = models.CharField(
        _("property key"), max_length=64, blank=True, default="", help_text=_("Only when field is a property")
    )
    keywords = models.TextField(_("keywords"), help_text=_("One per line or separated by commas"))
    tag_name = models.CharField(_("tag"), max_length=128, help_text=_("group:value, e.g. industry:信息科技"))
    last_applied_at = models.DateTimeField(_("last applied at"), null=True, blank=True)
    last_applied_count = models.IntegerField(_("leads tagged last time"), null=True, blank=True)

    class Meta:
        verbose_name = _("keyword tagging rule")
        verbose_name_plural = _("keyword tagging rules")
        constraints = [
            models.CheckConstraint(
                condition=~Q(field="property") | ~Q(property_key=""), name="keywordrule_property_key"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def keyword_list(self) -> list[str]:
        raw = self.keywords.replace("，", ",").replace("\n", ",")
        return [word.strip() for word in raw.split(",") if word.strip()]


class Pool(models.Model):
    """A rule-defined group of leads (MIL, MQL, SQL, value tiers …); membership follows the rule.

    Pools of one `family` are exclusive: a lead is in the first of them, by `priority`, whose rule it
    meets (that is how the high/medium/low value tiers work).
    """

    slug = models.SlugField(_("slug"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=100)
    rule = models.JSONField(_("rule"), help_text=_("The rule language of DESIGN.md, as JSON"))
    goal = models.CharField(_("nurturing goal"), max_length=255, blank=True, default="")
    description = models.TextField(_("description"), blank=True, default="")
    active = models.BooleanField(_("active"), default=True)
    family = models.SlugField(_("family"), max_length=32, blank=True, default="")
    priority = models.IntegerField(_("priority in the family"), default=100, help_text=_("Lower comes first"))
    rule_changed_at = models.DateTimeField(_("rule changed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("pool")
        verbose_name_plural = _("pools")
        ordering = ["family", "priority", "slug"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class PoolMembership(models.Model):
    """A stay of a lead in a pool; leaving closes the row, rejoining opens a new one."""

    # No foreign-key constraints in the database: a first evaluation over an existing base opens a row per
    # member (2.5M at a million leads), and checking two constraints per row at commit took longer than
    # writing the rows. The rows are only written by `INSERT … SELECT` from the lead table; deletes
    # cascade in the ORM, and a row left by a lead deleted during an evaluation is closed by the next
    # full pass (its lead is no longer a member). The pool's own index is `poolmembership_joined`.
    lead = models.ForeignKey(
        Lead, on_delete=models.CASCADE, related_name="pool_memberships", db_constraint=False
    )
    pool = models.ForeignKey(
        Pool, on_delete=models.CASCADE, related_name="memberships", db_constraint=False, db_index=False
    )
    joined_at = models.DateTimeField(_("joined at"))
    left_at = models.DateTimeField(_("left at"), null=True, blank=True)

    class Meta:
        verbose_name = _("pool membership")
        verbose_name_plural = _("pool memberships")
        constraints = [
            models.UniqueConstraint(
                fields=["lead", "pool"], condition=Q(left_at__isnull=True), name="poolmembership_one_open"
            )
        ]
        indexes = [
            models.Index(
                fields=["pool", "lead"], condition=Q(left_at__isnull=True), name="poolmembership_open"
            ),
            models.Index(fields=["pool", "joined_at"], name="poolmembership_joined"),
        ]

    def __str__(self) -> str:
        return f"{self.lead_id} in {self.pool_id}"


class PoolRun(models.Model):
    """One evaluation of a pool: full (every lead) or incremental (the leads marked dirty)."""

    class Kind(models.TextChoices):
        FULL = "full", _("full")
        INCREMENTAL = "incremental", _("incremental")

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(_("kind"), max_length=12, choices=Kind.choices)
    started_at = models.DateTimeField(_("started at"))
    seconds = models.FloatField(_("duration (s)"))
    evaluated = models.IntegerField(_("leads evaluated"), null=True, blank=True)
    joined = models.IntegerField(_("joined"))
    left = models.IntegerField(_("left"))
    size = models.IntegerField(_("size after"))

    class Meta:
        verbose_name = _("pool evaluation")
        verbose_name_plural = _("pool evaluations")
        indexes = [models.Index(fields=["pool", "kind", "started_at"], name="poolrun_pool_kind_at")]

    def __str__(self) -> str:
        return f"{self.pool_id} {self.kind} {self.started_at:%Y-%m-%d %H:%M}"


class DirtyLead(models.Model):
    """A lead whose data changed since the pools last looked at it (the incremental evaluation's queue)."""

    lead = models.OneToOneField(Lead, on_delete=models.CASCADE, primary_key=True, related_name="+")
    marked_at = models.DateTimeField(_("marked at"))
    # Marked by new events (or a merge that brought events): its score ledger must be rebuilt; an
    # attribute or tag change alone only rescores it.
    events = models.BooleanField(_("new events"), default=False, db_default=False)
    # With `events`: the earliest of the new events' times, so the ledger is rebuilt from that local day
    # on (the days before cannot have changed); empty: from the first event (a merge brought events).
    events_since = models.DateTimeField(_("new events since"), null=True, blank=True)

    class Meta:
        verbose_name = _("lead awaiting evaluation")
        verbose_name_plural = _("leads awaiting evaluation")

    def __str__(self) -> str:
        return f"{self.lead_id} dirty since {self.marked_at:%Y-%m-%d %H:%M:%S}"


class RecycleReason(models.Model):
    """Why the CRM or an SDR returned a lead to nurturing; the reason's tag decides its value pool."""

    code = models.SlugField(_("code"), max_length=32, unique=True)
    label = models.CharField(_("label"), max_length=64, unique=True)
    tag_name = models.CharField(
        _("tag"),
        max_length=128,
        help_text=_("Stamped on the lead, e.g. recycle:timing_later; pool rules read it"),
    )
    # What nurtures the returned lead next (the SDR workspace's "return to nurture").
    sequence = models.ForeignKey(
        "sequences.Sequence",
        verbose_name=_("then enroll in"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    active = models.BooleanField(_("active"), default=True)
    position = models.PositiveSmallIntegerField(_("position"), default=100)

    class Meta:
        verbose_name = _("recycle reason")
        verbose_name_plural = _("recycle reasons")
        ordering = ["position", "code"]

    def __str__(self) -> str:
        return self.label
