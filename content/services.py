"""Writes of the content library: tracked links (create, open, revoke), content views (the event, the
asset's tags stamped onto the lead, the counters), gated landing-page submissions, message templates."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, QuerySet, Value, When
from django.urls import reverse
from django.utils.timezone import now as timezone_now

from content.models import AssetViewer, ContentAsset, MessageTemplate, TagViewer, TrackedLink
from content.templating import template_check
from leads.models import Lead
from leads.services import EventInput, event_record_bulk, lead_tags_change, lead_upsert

TOKEN_BYTES = 12  # 16 characters of URL-safe base64: 96 random bits
# Link-preview fetchers and crawlers: WeChat/WeCom, Slack, WhatsApp, search engines … (a preview is
# not a view). Matched case-insensitively anywhere in the User-Agent.
PREVIEW_AGENTS = re.compile(
    r"bot|crawl|spider|slurp|preview|facebookexternalhit|whatsapp|telegram|slack|discord|skypeuri|"
    r"embedly|quora link|pinterest|vkshare|w3c_validator|bytespider|yisouspider|sogou|360spider|"
    r"headless|python-requests|python-httpx|curl/|wget/|okhttp|go-http-client|java/|apache-httpclient",
    re.IGNORECASE,
)


def user_agent_is_preview(user_agent: str) -> bool:
    """An empty User-Agent, or one of a preview fetcher or crawler, does not count as a view."""
    return not user_agent.strip() or bool(PREVIEW_AGENTS.search(user_agent))


# --- Message templates.


def message_template_save(*, template: MessageTemplate) -> MessageTemplate:
    """Save a message template; one that does not compile or leaves the sandbox raises TemplateRefused."""
    template_check(template.body)
    template.save()
    return template


# --- Tracked links.


def link_get_or_create(
    *, asset: ContentAsset, lead: Lead, touch_id: int | None = None, now: datetime | None = None
) -> TrackedLink:
    """The link of this asset for this lead (and touch): one per touch, created once."""
    existing = TrackedLink.objects.filter(asset=asset, lead=lead, touch_id=touch_id).first()
    if existing is not None:
        return existing
    link, _ = TrackedLink.objects.get_or_create(
        asset=asset,
        lead=lead,
        touch_id=touch_id,
        defaults={"token": secrets.token_urlsafe(TOKEN_BYTES), "created_at": now or timezone_now()},
    )
    return link


def link_path(link: TrackedLink) -> str:
    return reverse("content-link", args=[link.token])


def links_revoke(*, links: QuerySet[TrackedLink], now: datetime | None = None) -> int:
    """Revoke links: opening one afterwards is a 404 and records nothing."""
    return links.filter(revoked_at__isnull=True).update(revoked_at=now or timezone_now())


def asset_destination(asset: ContentAsset) -> str:
    """Where opening the asset goes: its gated landing page, its URL, its file, else its landing page."""
    if asset.gated:
        return reverse("content-landing", args=[asset.slug])
    if asset.target_url:
        return asset.target_url
    if asset.file:
        return asset.file.url
    return reverse("content-landing", args=[asset.slug])


@dataclass
class LinkOpen:
    link: TrackedLink
    destination: str
    recorded: bool


def link_open(*, token: str, method: str, user_agent: str, now: datetime | None = None) -> LinkOpen | None:
    """Open a tracked link: None for a forged or revoked token (nothing recorded). A GET by a person
    records the view; HEAD and preview fetchers get the destination and record nothing."""
    link = (
        TrackedLink.objects.select_related("asset", "lead")
        .filter(token=token, revoked_at__isnull=True, asset__active=True)
        .first()
    )
    if link is None:
        return None
    destination = asset_destination(link.asset)
    if method != "GET" or user_agent_is_preview(user_agent):
        return LinkOpen(link=link, destination=destination, recorded=False)
    now = now or timezone_now()
    with transaction.atomic():
        content_view_record(
            asset=link.asset,
            lead=link.lead,
            now=now,
            properties={
                "via": "link",
                "link": link.token,
                "touch": link.touch_id,
                "user_agent": user_agent[:300],
            },
        )
        TrackedLink.objects.filter(pk=link.pk).update(
            opens=F("opens") + 1,
            last_opened_at=now,
            first_opened_at=Case(
                When(first_opened_at__isnull=True, then=Value(now)), default=F("first_opened_at")
            ),
        )
    return LinkOpen(link=link, destination=destination, recorded=True)


# --- Content views.


def _viewer_insert(table: str, key: str, key_id: int, lead_id: int, now: datetime) -> bool:
    """Count a view of (key, lead); True when it is the lead's first (a new unique viewer)."""
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({key}, lead_id, views, first_at, last_at) VALUES (%s, %s, 1, %s, %s) "
            f"ON CONFLICT ({key}, lead_id) DO NOTHING RETURNING id",
            [key_id, lead_id, at, at],
        )
        if cursor.fetchone() is not None:
            return True
        cursor.execute(
            f"UPDATE {table} SET views = views + 1, last_at = %s WHERE {key} = %s AND lead_id = %s",
            [at, key_id, lead_id],
        )
        return False


def content_view_record(
    *, asset: ContentAsset, lead: Lead, now: datetime, properties: dict[str, Any] | None = None
) -> None:
    """A lead viewed an asset: the `content_viewed` event (which marks the lead dirty for pools and
    scoring), the asset's tags stamped onto the lead, and the view counted per asset and per tag."""
    tags = list(asset.tags.all())
    event_record_bulk(
        items=[
            EventInput(
                type="content_viewed",
                occurred_at=now,
                properties={
                    "asset": asset.slug,
                    "title": asset.title,
                    "form": asset.form,
                    "awareness": asset.awareness,
                    **{k: v for k, v in (properties or {}).items() if v not in (None, "")},
                },
                event_id=None,
                lead_id=lead.pk,
                identity=None,
                source="content",
            )
        ],
        now=now,
    )
    if tags:
        lead_tags_change(lead=lead, add=[tag.name for tag in tags], source="content", now=now)
    first = _viewer_insert(AssetViewer._meta.db_table, "asset_id", asset.pk, lead.pk, now)
    ContentAsset.objects.filter(pk=asset.pk).update(
        views=F("views") + 1, unique_viewers=F("unique_viewers") + (1 if first else 0)
    )
    for tag in tags:
        _viewer_insert(TagViewer._meta.db_table, "tag_id", tag.pk, lead.pk, now)


# --- Gated landing pages.


def landing_submit(
    *, asset: ContentAsset, person: dict[str, Any], consent_version: str, now: datetime | None = None
) -> Lead:
    """A gated form was submitted (validated and normalised): upsert the lead by the same identity
    matching as the API, store the consent, record `form_submitted` and the content view — all or
    nothing."""
    now = now or timezone_now()
    with transaction.atomic():
        result = lead_upsert(
            data={
                **{k: v for k, v in person.items() if v},
                "consent": True,
                "consent_at": now,
                "consent_version": consent_version,
            },
            defaults={"source": f"落地页:{asset.slug}"[:64]},
            why="landing page",
            now=now,
        )
        lead = result.lead
        event_record_bulk(
            items=[
                EventInput(
                    type="form_submitted",
                    occurred_at=now,
                    properties={
                        "form": "资料下载",
                        "asset": asset.slug,
                        "title": asset.title,
                        "consent": consent_version,
                    },
                    event_id=None,
                    lead_id=lead.pk,
                    identity=None,
                    source="landing",
                )
            ],
            now=now,
        )
        content_view_record(asset=asset, lead=lead, now=now, properties={"via": "landing"})
    return lead
