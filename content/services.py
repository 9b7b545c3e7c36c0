"""Writes of the content library: tracked links (create, open, revoke, the links of touches), content views
(the event, the asset's tags stamped onto the lead, the counters), gated landing-page submissions, message
templates."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.db.models import Case, F, QuerySet, Value, When
from django.urls import reverse
from django.utils.timezone import now as timezone_now

from content.models import AssetViewer, ContentAsset, MessageTemplate, TagViewer, TrackedLink
from content.selectors import content_recommend
from leads.models import Lead
from leads.services import EventInput, event_record_bulk, lead_tags_change, lead_upsert

TOKEN_BYTES = 12  # 16 characters of URL-safe base64: 96 random bits
# Link-preview fetchers and crawlers (a preview is not a view), matched case-insensitively. "bot" counts
# only as the end of a word (Googlebot/2.1, Slackbot-LinkExpanding, TelegramBot, DingTalk's preview
# fetcher DingTalkBot-LinkService) and never as the phone brand CUBOT ("Android 12; CUBOT KINGKONG 7");
# "spider" covers Baiduspider, Bytespider (ByteDance), YisouSpider, 360Spider and Sogou's spiders.
PREVIEW_AGENTS = re.compile(
    r"\b(?!cubot\b)[a-z0-9]*bot\b|crawl|spider|slurp|preview|facebookexternalhit|whatsapp|telegram|"
    r"slack-|discord|skypeuri|embedly|quora link|pinterest|vkshare|w3c_validator|headless|"
    r"python-requests|python-httpx|curl/|wget/|okhttp|go-http-client|java/|apache-httpclient",
    re.IGNORECASE,
)
LANDING_SALT = "content.landing"


def user_agent_is_preview(user_agent: str) -> bool:
    """An empty User-Agent, or one of a preview fetcher or crawler, does not count as a view."""
    return not user_agent.strip() or bool(PREVIEW_AGENTS.search(user_agent))


# --- Message templates.


def message_template_save(*, template: MessageTemplate) -> MessageTemplate:
    """Save a message template; one that does not compile or leaves the sandbox raises TemplateRefused
    (checked by the model's `save()`, so `.objects.create` cannot skip it either)."""
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


def _token_url(token: str) -> str:
    return settings.NURTURE_PUBLIC_URL.rstrip("/") + reverse("content-link", args=[token])


def link_url(link: TrackedLink) -> str:
    """The absolute URL of the link, as a message carries it (NURTURE_PUBLIC_URL)."""
    return _token_url(link.token)


def _link_by_token(token: str) -> TrackedLink | None:
    """The live link of a token, or of a token folded into it by a lead merge (an alias)."""
    live = TrackedLink.objects.select_related("asset", "lead").filter(
        revoked_at__isnull=True, asset__active=True
    )
    return live.filter(token=token).first() or live.filter(aliases__token=token).first()


def links_revoke(*, links: QuerySet[TrackedLink], now: datetime | None = None) -> int:
    """Revoke links: opening one afterwards is a 404 and records nothing."""
    return links.filter(revoked_at__isnull=True).update(revoked_at=now or timezone_now())


def asset_destination(asset: ContentAsset) -> str:
    """Where opening the asset goes: its gated landing page, its URL, its file's download view (files have
    no URL of their own), else its landing page."""
    if asset.gated:
        return reverse("content-landing", args=[asset.slug])
    if asset.target_url:
        return asset.target_url
    if asset.file:
        return reverse("content-file", args=[asset.slug])
    return reverse("content-landing", args=[asset.slug])


def landing_token_sign(link: TrackedLink, token: str | None = None) -> str:
    """The signed `?t=` a gated link hands to its landing page: which link (so which lead and touch)."""
    return signing.Signer(salt=LANDING_SALT).sign(token or link.token)


def landing_token_link(*, value: str) -> TrackedLink | None:
    """The live link a signed `?t=` names; None when it is missing, forged or revoked."""
    if not value:
        return None
    try:
        token = signing.Signer(salt=LANDING_SALT).unsign(value[:200])
    except signing.BadSignature:
        return None
    return _link_by_token(token)


def link_destination(link: TrackedLink, token: str | None = None) -> str:
    """Where the link goes: a gated asset's landing page with the signed link, else the asset's place."""
    if link.asset.gated:
        path = reverse("content-landing", args=[link.asset.slug])
        return f"{path}?{urlencode({'t': landing_token_sign(link, token)}, safe=':')}"
    return asset_destination(link.asset)


@dataclass
class LinkOpen:
    link: TrackedLink
    destination: str
    recorded: bool


def link_open(*, token: str, method: str, user_agent: str, now: datetime | None = None) -> LinkOpen | None:
    """Open a tracked link: None for a forged or revoked token (nothing recorded). A GET by a person
    records the view, or only `link_clicked` for a gated asset (its form records the view); HEAD and
    preview fetchers get the same destination and record nothing."""
    link = _link_by_token(token)
    if link is None:
        return None
    destination = link_destination(link, token)
    if method != "GET" or user_agent_is_preview(user_agent):
        return LinkOpen(link=link, destination=destination, recorded=False)
    now = now or timezone_now()
    properties = {"via": "link", "link": token, "touch": link.touch_id, "user_agent": user_agent[:300]}
    with transaction.atomic():
        if link.asset.gated:
            event_record_bulk(
                items=[
                    EventInput(
                        type="link_clicked",
                        occurred_at=now,
                        properties={
                            "asset": link.asset.slug,
                            "title": link.asset.title,
                            **{k: v for k, v in properties.items() if v not in (None, "")},
                        },
                        event_id=None,
                        lead_id=link.lead_id,
                        identity=None,
                        source="content",
                    )
                ],
                now=now,
            )
        else:
            content_view_record(asset=link.asset, lead=link.lead, now=now, properties=properties)
        TrackedLink.objects.filter(pk=link.pk).update(
            opens=F("opens") + 1,
            last_opened_at=now,
            first_opened_at=Case(
                When(first_opened_at__isnull=True, then=Value(now)), default=F("first_opened_at")
            ),
        )
    return LinkOpen(link=link, destination=destination, recorded=True)


# --- The content of touches (the sequence dispatcher's hook).


@dataclass
class TouchContent:
    asset: ContentAsset | None
    link: TrackedLink | None
    url: str  # absolute; "" when there is nothing to send
    signals: list[str] = field(default_factory=list)


def content_for_touch(
    *, lead: Lead, asset: ContentAsset | None = None, touch_id: int | None = None, now: datetime
) -> TouchContent:
    """What a touch carries: the given asset or else the recommended one (with the signals that chose it),
    the lead's tracked link to it for this touch, and the link's absolute URL."""
    signals: list[str] = []
    if asset is None:
        pick = content_recommend(lead=lead, now=now)
        asset, signals = pick.asset, pick.signals
    if asset is None:
        return TouchContent(asset=None, link=None, url="", signals=signals)
    link = link_get_or_create(asset=asset, lead=lead, touch_id=touch_id, now=now)
    return TouchContent(asset=asset, link=link, url=link_url(link), signals=signals)


def content_links_for_touches(*, items: Sequence[tuple[int, int, int]], now: datetime) -> dict[int, str]:
    """The absolute link URL of each `(touch_id, lead_id, asset_id)`, keyed by touch: the missing links are
    created in one insert (ignoring those that exist) and all are read back in one select."""
    wanted = {touch_id: (lead_id, asset_id) for touch_id, lead_id, asset_id in items}
    if not wanted:
        return {}
    TrackedLink.objects.bulk_create(
        [
            TrackedLink(
                token=secrets.token_urlsafe(TOKEN_BYTES),
                asset_id=asset_id,
                lead_id=lead_id,
                touch_id=touch_id,
                created_at=now,
            )
            for touch_id, (lead_id, asset_id) in wanted.items()
        ],
        ignore_conflicts=True,
    )
    urls: dict[int, str] = {}
    rows = TrackedLink.objects.filter(touch_id__in=list(wanted)).values_list(
        "touch_id", "lead_id", "asset_id", "token"
    )
    for touch_id, lead_id, asset_id, token in rows:
        if wanted[touch_id] == (lead_id, asset_id):
            urls[touch_id] = _token_url(token)
    for touch_id in wanted.keys() - urls.keys():  # an insert dropped by a token collision: one at a time
        lead_id, asset_id = wanted[touch_id]
        asset, lead = ContentAsset.objects.get(pk=asset_id), Lead.objects.get(pk=lead_id)
        link = link_get_or_create(asset=asset, lead=lead, touch_id=touch_id, now=now)
        urls[touch_id] = link_url(link)
    return urls


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
    *,
    asset: ContentAsset,
    person: dict[str, Any],
    consent_version: str,
    link: TrackedLink | None = None,
    now: datetime | None = None,
) -> Lead:
    """A gated form was submitted (validated and normalised): upsert the lead by the same identity
    matching as the API, store the consent, record `form_submitted` and the content view — all or
    nothing. `link` is the tracked link that led here (from the signed `?t=`): the view carries its
    touch, but the lead is whoever the form's identities say (a forwarded link merges no one)."""
    now = now or timezone_now()
    via: dict[str, Any] = {"via": "landing"}
    if link is not None and link.asset_id == asset.pk:
        via.update(link=link.token, touch=link.touch_id, link_lead=link.lead_id)
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
        if via.get("link_lead") == lead.pk:
            del via["link_lead"]  # the link's own lead filled in the form: nothing to tell
        content_view_record(asset=asset, lead=lead, now=now, properties=via)
    return lead
