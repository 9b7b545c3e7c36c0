"""`bench ingest`: bulk lead upsert, bulk events and the tag-filtered lead list, each beside the
same work done the naive way (one `save()` per row; OFFSET + COUNT(*) + a tag query per lead)."""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.test.utils import override_settings
from django.utils.timezone import now as timezone_now
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from leads.api.serializers import MAX_BATCH, EventWriteSerializer, LeadSerializer, LeadWriteSerializer
from leads.auth import api_key_create
from leads.models import IDENTITY_FIELDS, Event, Lead, LeadTag, Tag
from leads.services import INBOUND_EVENT_TYPES
from leads.tagging import tag_split
from nurture.bench.data import (
    LIST_TAG_COMMON,
    LIST_TAG_RARE,
    event_payloads,
    lead_payloads,
    list_leads_load,
)
from nurture.bench.http import HttpRun, gunicorn_serving, post_concurrently

Log = Callable[[str], None]
LIST_PAGE_SIZE = 50  # the API's default page


@dataclass
class Figure:
    """One measured figure beside its target and the naive way's figure."""

    key: str
    label: str
    value: float
    unit: str  # "/s" figures are rates (higher is better), "ms" figures are latencies
    target: float | None
    detail: str
    naive: float | None = None
    naive_detail: str = ""

    @property
    def is_rate(self) -> bool:
        return self.unit.endswith("/s")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.is_rate else self.value <= self.target

    @property
    def ratio(self) -> float | None:
        """How many times better than the naive way."""
        if not self.naive or not self.value:
            return None
        return self.value / self.naive if self.is_rate else self.naive / self.value


@dataclass
class IngestSizes:
    leads: int = 100_000
    events: int = 100_000
    list_leads: int = 1_000_000
    naive_sample: int = 2_000
    list_repeat: int = 21
    skip_naive: bool = False
    http_clients: int = 0  # 0: no run over real HTTP
    http_workers: int = 2


@dataclass
class IngestReport:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _api_client(name: str) -> APIClient:
    _, plain = api_key_create(name=f"bench-{name}", scopes=["read", "write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    return client


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def frozen_heap() -> Iterator[None]:
    """The harness holds every payload of the run, which a server process would not: freeze them out
    of the garbage collector's generations so that a timed run pays what a server would."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def bench_settings() -> Iterator[None]:
    """No query log (DEBUG), and throttle counters under a prefix of their own in the shared cache."""
    caches = {
        alias: {**conf, "KEY_PREFIX": f"bench-{time.time_ns()}"} for alias, conf in settings.CACHES.items()
    }
    with override_settings(DEBUG=False, CACHES=caches):
        yield


# --- Timed runs through the API (in-process: middleware, API-key auth, throttle, serializers, views).


def _post_batches(client: APIClient, path: str, bodies: list[bytes]) -> tuple[float, list[dict[str, Any]]]:
    """POST the pre-encoded bodies one after another; return the seconds taken and the answers."""
    answers = []
    with frozen_heap():
        started = time.perf_counter()
        for body in bodies:
            response = client.post(path, data=body, content_type="application/json")
            if response.status_code != 200:
                raise RuntimeError(f"{path} answered {response.status_code}: {response.content[:500]!r}")
            answers.append(response.json())
        seconds = time.perf_counter() - started
    return seconds, answers


def _leads_bulk_upsert(client: APIClient, payloads: list[dict[str, Any]]) -> tuple[float, list[dict]]:
    bodies = [json.dumps({"leads": chunk}).encode() for chunk in _chunks(payloads, MAX_BATCH)]
    seconds, answers = _post_batches(client, "/api/v1/leads/bulk_upsert/", bodies)
    return seconds, [result for answer in answers for result in answer["results"]]


def _events_post(client: APIClient, payloads: list[dict[str, Any]]) -> tuple[float, list[dict]]:
    bodies = [json.dumps(chunk).encode() for chunk in _chunks(payloads, MAX_BATCH)]
    seconds, answers = _post_batches(client, "/api/v1/events/", bodies)
    return seconds, [result for answer in answers for result in answer["results"]]


def _list_first_page_ms(client: APIClient, tag: str, repeat: int) -> list[float]:
    path = "/api/v1/leads/"
    for _ in range(2):  # warm the caches, as a live server's would be
        client.get(path, {"tag": tag})
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, {"tag": tag})
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or len(response.json()["results"]) != LIST_PAGE_SIZE:
            raise RuntimeError(
                f"lead list ?tag={tag} answered {response.status_code}: {response.content[:300]!r}"
            )
    return samples


# --- The naive way: what the same work costs row by row.


def _naive_leads_upsert(payloads: list[dict[str, Any]], now: datetime) -> float:
    """Validate as the API does, then per lead: look it up by identity, `save()`, and per tag a
    `get_or_create` of the tag and of the link, each statement in its own transaction."""
    with frozen_heap():
        return _naive_leads_upsert_loop(payloads, now)


def _naive_leads_upsert_loop(payloads: list[dict[str, Any]], now: datetime) -> float:
    started = time.perf_counter()
    for entry in payloads:
        serializer = LeadWriteSerializer(data=entry, require_identity=True)
        if not serializer.is_valid():
            continue
        data, tag_names = LeadWriteSerializer.split(serializer.validated_data)
        lead = None
        for name in IDENTITY_FIELDS:
            if data.get(name):
                lead = Lead.objects.filter(**{name: data[name]}).first()
                if lead is not None:
                    break
        lead = lead or Lead()
        for name, value in data.items():
            if name == "properties":
                lead.properties = {**lead.properties, **value}
            elif value is not None or name not in IDENTITY_FIELDS:
                setattr(lead, name, value)
        lead.save()
        for tag_name in tag_names:
            group, label = tag_split(tag_name)
            tag, _ = Tag.objects.get_or_create(name=tag_name, defaults={"group": group, "label": label})
            link, created = LeadTag.objects.get_or_create(
                lead=lead, tag=tag, defaults={"first_at": now, "last_at": now, "source": "import"}
            )
            if not created:
                link.count += 1
                link.last_at = now
                link.save()
    return time.perf_counter() - started


def _naive_events_record(payloads: list[dict[str, Any]], now: datetime) -> float:
    """Validate as the API does, then per event: load its lead (or find/create it by identity), check
    the event_id, `save()` the event and `save()` the lead's last-event times."""
    with frozen_heap():
        return _naive_events_record_loop(payloads, now)


def _naive_events_record_loop(payloads: list[dict[str, Any]], now: datetime) -> float:
    started = time.perf_counter()
    for entry in payloads:
        serializer = EventWriteSerializer(data=entry)
        if not serializer.is_valid():
            continue
        data = serializer.validated_data
        ref = data["lead"]
        if isinstance(ref, int):
            lead = Lead.objects.filter(pk=ref).first()
        else:
            lead = None
            for name in IDENTITY_FIELDS:
                if ref.get(name):
                    lead = Lead.objects.filter(**{name: ref[name]}).first()
                    if lead is not None:
                        break
            if lead is None:
                lead = Lead(**{name: ref[name] for name in IDENTITY_FIELDS if ref.get(name)}, source="api")
                lead.save()
        if lead is None:
            continue
        event_id = data.get("event_id") or None
        if event_id and Event.objects.filter(event_id=event_id).exists():
            continue
        occurred_at = data.get("occurred_at") or now
        Event(
            lead=lead,
            type=data["type"],
            occurred_at=occurred_at,
            properties=data.get("properties") or {},
            event_id=event_id,
            source="api",
        ).save()
        lead.last_event_at = max(filter(None, [lead.last_event_at, occurred_at]))
        if data["type"] in INBOUND_EVENT_TYPES:
            lead.last_inbound_at = max(filter(None, [lead.last_inbound_at, occurred_at]))
        lead.save()
    return time.perf_counter() - started


def _naive_list_first_page_ms(tag: str, repeat: int) -> list[float]:
    """Page 1 the textbook way: COUNT(*) of the join, OFFSET/LIMIT, and the serializer fetching each
    lead's tags (and each tag) by itself."""

    def page() -> bytes:
        leads = Lead.objects.filter(lead_tags__tag__name=tag).order_by("-id")
        total = leads.count()
        rows = list(leads[0:LIST_PAGE_SIZE])
        return JSONRenderer().render(
            {"count": total, "results": [LeadSerializer(lead).data for lead in rows]}
        )

    for _ in range(2):
        page()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        page()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# --- Over real HTTP.


def _over_http(
    *, sizes: IngestSizes, run: str, now: datetime, naive: dict[str, Figure], log: Log
) -> list[Figure]:
    """New leads, then events on them, posted by `http_clients` clients at once to gunicorn."""
    _, key = api_key_create(name="bench-http", scopes=["read", "write"])
    how = f"gunicorn {sizes.http_workers} workers, {sizes.http_clients} clients at once"
    figures = []
    payloads = lead_payloads(run=run + "h", start=3_000_000, count=sizes.leads)
    bodies = [json.dumps({"leads": chunk}).encode() for chunk in _chunks(payloads, MAX_BATCH)]
    with gunicorn_serving(workers=sizes.http_workers) as url:
        log(f"http: bulk upsert of {sizes.leads:,} new leads ({how})…")
        leads = post_concurrently(
            url=url, key=key, path="/api/v1/leads/bulk_upsert/", bodies=bodies, clients=sizes.http_clients
        )
        results = [result for answer in leads.answers for result in answer["results"]]
        lead_ids = [r["id"] for r in results if "id" in r]
        figures.append(
            Figure(
                key="leads_bulk_upsert_http",
                label="lead bulk upsert (new), HTTP",
                value=_rate(sizes.leads, leads.seconds),
                unit="leads/s",
                target=2000,
                detail=f"{sizes.leads:,} leads, {MAX_BATCH:,}/call, {how}, {leads.seconds:.1f} s "
                f"({_statuses(results)}{_failed(leads)})",
                naive=naive["leads_bulk_upsert"].naive,
                naive_detail=naive["leads_bulk_upsert"].naive_detail,
            )
        )
        identities = [
            {"external_id": item["external_id"]} for item in payloads[::20] if "external_id" in item
        ]
        events = event_payloads(
            run=run + "h", count=sizes.events, lead_ids=lead_ids, identities=identities, now=now, seed=13
        )
        bodies = [json.dumps(chunk).encode() for chunk in _chunks(events, MAX_BATCH)]
        log(f"http: {sizes.events:,} events ({how})…")
        posted = post_concurrently(
            url=url, key=key, path="/api/v1/events/", bodies=bodies, clients=sizes.http_clients
        )
        results = [result for answer in posted.answers for result in answer["results"]]
        figures.append(
            Figure(
                key="events_bulk_http",
                label="events (10% by identity), HTTP",
                value=_rate(sizes.events, posted.seconds),
                unit="events/s",
                target=5000,
                detail=f"{sizes.events:,} events, {MAX_BATCH:,}/call, {how}, {posted.seconds:.1f} s "
                f"({_statuses(results)}{_failed(posted)})",
                naive=naive["events_bulk"].naive,
                naive_detail=naive["events_bulk"].naive_detail,
            )
        )
    return figures


def _failed(run: HttpRun) -> str:
    return f"; {len(run.failures)} calls failed, first: {run.failures[0]}" if run.failures else ""


# --- The scenario.


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else 0.0


def _statuses(results: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return ", ".join(f"{counts[key]:,} {key}" for key in sorted(counts))


def bench_ingest(*, sizes: IngestSizes, log: Log) -> IngestReport:
    """Run the ingest figures on the current (throwaway) database and return them."""
    report = IngestReport()
    now = timezone_now()
    run = f"b{time.time_ns() % 10**6}"
    naive_n = 0 if sizes.skip_naive else min(sizes.naive_sample, sizes.leads)

    # 1. Bulk upsert of new leads, 1,000 per call.
    client = _api_client("leads")
    payloads = lead_payloads(run=run, start=0, count=sizes.leads)
    log(f"leads: bulk upsert of {sizes.leads:,} new leads through the API…")
    seconds, results = _leads_bulk_upsert(client, payloads)
    upsert = Figure(
        key="leads_bulk_upsert",
        label="lead bulk upsert (new)",
        value=_rate(sizes.leads, seconds),
        unit="leads/s",
        target=2000,
        detail=f"{sizes.leads:,} leads, {MAX_BATCH:,}/call, {seconds:.1f} s ({_statuses(results)})",
    )
    lead_ids = [r["id"] for r in results if "id" in r]
    if naive_n:
        log(f"leads: the naive way on {naive_n:,} new leads…")
        naive_payloads = lead_payloads(run=run + "n", start=sizes.leads, count=naive_n)
        naive_seconds = _naive_leads_upsert(naive_payloads, now)
        upsert.naive = _rate(naive_n, naive_seconds)
        upsert.naive_detail = f"save() per lead, {naive_n:,} leads"
    report.figures.append(upsert)

    # The lead table went from nothing to its size within seconds, faster than autovacuum analyzes
    # it: refresh the planner's statistics as autovacuum would have in a table grown at a human pace.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    # 1b. The same payloads again with changes: every item is an update.
    updates = max(sizes.leads // 10, 1)
    changed = [
        {**item, "company": item["company"] + "集团", "tags": ["interest:webinar"]} for item in payloads
    ]
    log(f"leads: bulk upsert of {updates:,} existing leads (updates)…")
    seconds, results = _leads_bulk_upsert(client, changed[:updates])
    update = Figure(
        key="leads_bulk_update",
        label="lead bulk upsert (updates)",
        value=_rate(updates, seconds),
        unit="leads/s",
        target=None,
        detail=f"{updates:,} leads, {MAX_BATCH:,}/call, {seconds:.1f} s ({_statuses(results)})",
    )
    if naive_n:
        sample = changed[updates : updates + naive_n]
        log(f"leads: the naive way on {len(sample):,} updates…")
        update.naive = _rate(len(sample), _naive_leads_upsert(sample, now))
        update.naive_detail = f"save() per lead, {len(sample):,} leads"
    report.figures.append(update)

    # 2. Events, 1,000 per call, leads by id and some by identity.
    client = _api_client("events")
    identities = [
        {name: item[name]}
        for item in payloads[:: max(len(payloads) // 5000, 1)]
        for name in ("external_id", "phone", "email")
        if name in item and item.get("phone") != "12345"
    ]
    events = event_payloads(run=run, count=sizes.events, lead_ids=lead_ids, identities=identities, now=now)
    log(f"events: {sizes.events:,} events through the API…")
    seconds, results = _events_post(client, events)
    event_figure = Figure(
        key="events_bulk",
        label="events (10% by identity)",
        value=_rate(sizes.events, seconds),
        unit="events/s",
        target=5000,
        detail=f"{sizes.events:,} events, {MAX_BATCH:,}/call, {seconds:.1f} s ({_statuses(results)})",
    )
    if naive_n:
        log(f"events: the naive way on {naive_n:,} events…")
        naive_events = event_payloads(
            run=run + "n", count=naive_n, lead_ids=lead_ids, identities=identities, now=now, seed=12
        )
        event_figure.naive = _rate(naive_n, _naive_events_record(naive_events, now))
        event_figure.naive_detail = f"save() per event and lead, {naive_n:,} events"
    report.figures.append(event_figure)

    # 2b. The same over real HTTP: gunicorn on the bench database, several clients at once.
    if sizes.http_clients:
        report.figures += _over_http(
            sizes=sizes, run=run, now=now, naive={f.key: f for f in report.figures}, log=log
        )

    # 3. The tag-filtered list over a big table.
    log(f"list: loading {sizes.list_leads:,} leads and their tags set-based…")
    started = time.perf_counter()
    tagged = list_leads_load(count=sizes.list_leads)
    report.notes.append(
        f"List data: {sizes.list_leads:,} leads loaded with INSERT … SELECT generate_series in "
        f"{time.perf_counter() - started:.0f} s, then ANALYZE; "
        f"`{LIST_TAG_COMMON}` on {tagged[LIST_TAG_COMMON]:,}, "
        f"`{LIST_TAG_RARE}` on {tagged[LIST_TAG_RARE]:,}, one `industry:*` tag on every lead."
    )
    client = _api_client("list")
    for key, tag, share in (("list_common", LIST_TAG_COMMON, "20%"), ("list_rare", LIST_TAG_RARE, "0.5%")):
        log(f"list: GET /api/v1/leads/?tag={tag}, first page…")
        samples = _list_first_page_ms(client, tag, sizes.list_repeat)
        figure = Figure(
            key=key,
            label=f"lead list ?tag= on {share} of leads",
            value=statistics.median(samples),
            unit="ms",
            target=100,
            detail=(
                f"first page of {LIST_PAGE_SIZE}, {tagged[tag]:,} of {sizes.list_leads:,} leads tagged, "
                f"median of {len(samples)} (max {max(samples):.1f} ms)"
            ),
        )
        if not sizes.skip_naive:
            naive_samples = _naive_list_first_page_ms(tag, sizes.list_repeat)
            figure.naive = statistics.median(naive_samples)
            figure.naive_detail = "COUNT(*) + OFFSET, a tag query per lead"
        report.figures.append(figure)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM leads_lead")
        report.notes.append(f"Leads in the bench database at the end: {cursor.fetchone()[0]:,}.")
    return report
