"""Content: tagged assets (the bait of nurturing), message templates, tracked per-lead links, consent
texts of gated landing pages, and the counters of who viewed what."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from content.storage import asset_storage
from content.templating import TemplateRefused, template_check
from leads.models import Lead, Tag


class Form(models.TextChoices):
    ARTICLE = "article", _("article")
    WHITEPAPER = "whitepaper", _("whitepaper")
    CASE_STUDY = "case_study", _("case study")
    WEBINAR = "webinar", _("webinar")
    VIDEO = "video", _("video")
    PPT = "ppt", _("slides")
    TRIAL = "trial", _("free trial")
    DEMO = "demo", _("product demo")
    POSTER = "poster", _("poster")
    EVENT = "event", _("offline event")


class Awareness(models.TextChoices):
    PROBLEM = "problem_aware", _("problem aware")
    SOLUTION = "solution_aware", _("solution aware")
    PRODUCT = "product_aware", _("product aware")


class Funnel(models.TextChoices):
    TOFU = "tofu", _("top of funnel")
    MOFU = "mofu", _("middle of funnel")
    BOFU = "bofu", _("bottom of funnel")


ONE_TO_FIVE = [MinValueValidator(1), MaxValueValidator(5)]


class ContentAsset(models.Model):
    """A piece of content a touch can carry; opening it stamps its tags onto the lead."""

    title = models.CharField(_("title"), max_length=200)
    slug = models.SlugField(_("slug"), max_length=80, unique=True, allow_unicode=False)
    form = models.CharField(_("form"), max_length=16, choices=Form.choices)
    awareness = models.CharField(_("awareness stage"), max_length=16, choices=Awareness.choices)
    funnel = models.CharField(_("funnel stage"), max_length=8, choices=Funnel.choices)
    friction = models.PositiveSmallIntegerField(
        _("friction"), default=1, validators=ONE_TO_FIVE, help_text=_("1 = a click, 5 = a meeting")
    )
    value_proximity = models.PositiveSmallIntegerField(
        _("value proximity"),
        default=1,
        validators=ONE_TO_FIVE,
        help_text=_("1 = far from the product's value, 5 = the product itself (trial, demo)"),
    )
    call_to_action = models.CharField(_("call to action"), max_length=100, blank=True, default="")
    target_url = models.URLField(_("target URL"), max_length=500, blank=True, default="")
    file = models.FileField(_("file"), upload_to="content/", storage=asset_storage, blank=True, default="")
    gated = models.BooleanField(
        _("gated"), default=False, help_text=_("Links go to the landing page's form first")
    )
    summary = models.TextField(_("summary"), blank=True, default="")
    tags = models.ManyToManyField(Tag, verbose_name=_("tags"), blank=True, related_name="assets")
    active = models.BooleanField(_("active"), default=True)
    views = models.PositiveIntegerField(_("views"), default=0)
    unique_viewers = models.PositiveIntegerField(_("unique viewers"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("content asset")
        verbose_name_plural = _("content assets")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(friction__gte=1, friction__lte=5), name="asset_friction_1_5"),
            models.CheckConstraint(
                condition=Q(value_proximity__gte=1, value_proximity__lte=5), name="asset_proximity_1_5"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class MessageTemplate(models.Model):
    """The text of a touch with merge fields ({{ lead.name }}, {{ link }} …), rendered in a sandbox."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    body = models.TextField(_("text"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Every way in (admin, service, `.objects.create`) meets the sandbox: raises TemplateRefused.
        template_check(self.body)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        try:
            template_check(self.body)
        except TemplateRefused as exc:
            raise ValidationError({"body": str(exc)}) from exc


class TrackedLink(models.Model):
    """A short per-lead link to an asset (`/c/<token>/`): opening it records the view."""

    token = models.CharField(_("token"), max_length=16, unique=True)
    asset = models.ForeignKey(ContentAsset, on_delete=models.CASCADE, related_name="links")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="tracked_links")
    touch_id = models.BigIntegerField(_("touch"), null=True, blank=True)
    created_at = models.DateTimeField(_("sent at"))
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    opens = models.PositiveIntegerField(_("opens"), default=0)
    first_opened_at = models.DateTimeField(_("first opened at"), null=True, blank=True)
    last_opened_at = models.DateTimeField(_("last opened at"), null=True, blank=True)

    class Meta:
        verbose_name = _("tracked link")
        verbose_name_plural = _("tracked links")
        # One link per asset, lead and touch; and one without a touch (sent by hand).
        constraints = [
            models.UniqueConstraint(
                fields=["asset", "lead", "touch_id"],
                condition=Q(touch_id__isnull=False),
                name="trackedlink_one_per_touch",
            ),
            models.UniqueConstraint(
                fields=["asset", "lead"], condition=Q(touch_id__isnull=True), name="trackedlink_one_by_hand"
            ),
        ]
        indexes = [models.Index(fields=["lead", "asset"], name="trackedlink_lead_asset")]

    def __str__(self) -> str:
        return f"/c/{self.token}/"


class TrackedLinkAlias(models.Model):
    """The token of a link folded into another by a lead merge: it keeps opening the link it was folded
    into, so a message already sent keeps working."""

    token = models.CharField(_("token"), max_length=16, unique=True)
    link = models.ForeignKey(TrackedLink, on_delete=models.CASCADE, related_name="aliases")
    created_at = models.DateTimeField(_("merged at"))

    class Meta:
        verbose_name = _("tracked link alias")
        verbose_name_plural = _("tracked link aliases")

    def __str__(self) -> str:
        return f"/c/{self.token}/ → {self.link}"


class AssetViewer(models.Model):
    """One lead's views of one asset (the unique viewers of the asset are its rows)."""

    asset = models.ForeignKey(ContentAsset, on_delete=models.CASCADE, related_name="viewers")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="asset_views")
    views = models.PositiveIntegerField(_("views"), default=1)
    first_at = models.DateTimeField(_("first viewed at"))
    last_at = models.DateTimeField(_("last viewed at"))

    class Meta:
        verbose_name = _("asset viewer")
        verbose_name_plural = _("asset viewers")
        constraints = [models.UniqueConstraint(fields=["asset", "lead"], name="assetviewer_unique")]
        indexes = [models.Index(fields=["lead", "asset"], name="assetviewer_lead")]

    def __str__(self) -> str:
        return f"{self.lead_id} viewed {self.asset_id} ×{self.views}"


class TagViewer(models.Model):
    """One lead's views of content with one tag (per-tag views and unique viewers)."""

    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="content_viewers")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="tag_views")
    views = models.PositiveIntegerField(_("views"), default=1)
    first_at = models.DateTimeField(_("first viewed at"))
    last_at = models.DateTimeField(_("last viewed at"))

    class Meta:
        verbose_name = _("tag viewer")
        verbose_name_plural = _("tag viewers")
        constraints = [models.UniqueConstraint(fields=["tag", "lead"], name="tagviewer_unique")]

    def __str__(self) -> str:
        return f"{self.lead_id} viewed {self.tag_id} ×{self.views}"


class ConsentText(models.Model):
    """The consent a gated form asks for; a submission stores the version it agreed to."""

    version = models.CharField(_("version"), max_length=32, unique=True)
    text = models.TextField(_("text"))
    active = models.BooleanField(_("in use"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("consent text")
        verbose_name_plural = _("consent texts")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.version
