"""Real HTTP against a live server, with writers racing: nothing lost, nothing stored twice."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from leads.auth import api_key_create
from leads.models import Event, Lead

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def http(live_server):
    if connection.vendor != "postgresql":
        pytest.skip("concurrency is proven on PostgreSQL")
    _, plain = api_key_create(name="race", scopes=["read", "write"])
    with httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {plain}"}, timeout=60
    ) as client:
        yield client


def _bulk(http, items):
    response = http.post("/api/v1/leads/bulk_upsert/", json={"leads": items})
    assert response.status_code == 200, response.text
    return response.json()


def test_racing_upserts_of_the_same_people_make_one_lead_each(http, live_server):
    people = [{"phone": f"138{n:08d}", "name": f"线索{n}"} for n in range(200)]

    def worker(offset: int) -> dict:
        with httpx.Client(base_url=live_server.url, headers=http.headers, timeout=60) as client:
            # Each worker sends the same people in a different order and format.
            batch = people[offset:] + people[:offset]
            batch = [{**p, "phone": "+86 " + p["phone"]} if offset % 2 else p for p in batch]
            response = client.post("/api/v1/leads/bulk_upsert/", json={"leads": batch})
            assert response.status_code == 200, response.text
            return response.json()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(worker, [0, 50, 100, 150]))
    assert all(r["errors"] == 0 for r in results)
    assert sum(r["created"] for r in results) == 200
    assert Lead.objects.count() == 200
    single = [{"phone": "13900000000", "name": "同一人"}] * 1

    def upsert(_: int) -> int:
        with httpx.Client(base_url=live_server.url, headers=http.headers, timeout=60) as client:
            return client.post("/api/v1/leads/upsert/", json=single[0]).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(upsert, range(12)))
    assert sorted(set(codes)) in ([200, 201], [201])
    assert codes.count(201) == 1
    assert Lead.objects.filter(phone="+8613900000000").count() == 1


def test_racing_event_batches_store_each_event_id_once(http, live_server):
    lead_id = http.post("/api/v1/leads/", json={"phone": "13700000000"}).json()["id"]
    for round_ in range(3):
        # The same event_ids in rotated orders: the inserts must queue on the unique index, not deadlock.
        events = [
            {"event_id": f"race-{round_}-{n}", "lead": lead_id, "type": "content_viewed"} for n in range(300)
        ]

        def send(offset: int, events=events) -> dict:
            with httpx.Client(base_url=live_server.url, headers=http.headers, timeout=60) as client:
                response = client.post("/api/v1/events/", json=events[offset:] + events[:offset])
                assert response.status_code == 200, response.text[:300]
                return response.json()

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(send, [0, 75, 150, 225]))
        assert sum(r["created"] for r in results) == 300
        assert sum(r["duplicates"] for r in results) == 900
    assert Event.objects.count() == 900


def test_updated_since_pages_through_a_table_being_written_to(http, live_server):
    _bulk(http, [{"phone": f"136{n:08d}", "name": f"存量{n}"} for n in range(400)])
    start = Lead.objects.order_by("updated_at").first().updated_at.isoformat()
    existing = set(Lead.objects.values_list("pk", flat=True))
    stop = threading.Event()
    touched: set[int] = set()

    def writer(lane: int) -> None:
        with httpx.Client(base_url=live_server.url, headers=http.headers, timeout=60) as client:
            n = 0
            while not stop.is_set() and n < 15:
                # New leads and updates of old ones, in transactions that take a while to commit; two
                # writers, so a transaction stamped earlier can commit after one stamped later.
                items = [{"phone": f"135{lane}{n:03d}{k:04d}", "name": "新线索"} for k in range(100)]
                items += [
                    {"phone": f"136{(n * 7 + k + lane * 200) % 400:08d}", "title": f"改{n}"}
                    for k in range(10)
                ]
                body = client.post("/api/v1/leads/bulk_upsert/", json={"leads": items}).json()
                touched.update(r["id"] for r in body["results"][100:])
                n += 1

    threads = [threading.Thread(target=writer, args=(lane,)) for lane in (1, 2)]
    for thread in threads:
        thread.start()
    seen: dict[int, list[str]] = {}
    url = f"/api/v1/leads/?updated_since={start.replace('+', '%2B')}&page_size=10"
    last = None
    try:
        while url:
            body = http.get(url).json()
            for lead in body["results"]:
                seen.setdefault(lead["id"], []).append(lead["updated_at"])
                last = lead
            url = body["next"]
            time.sleep(0.01)  # keep the pass going while the writers write
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    # Nothing that existed before was skipped.
    assert existing <= seen.keys()
    # A lead comes again only when it changed after it was returned, and then with its new data.
    for lead_id, stamps in seen.items():
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), (lead_id, stamps)
        if len(stamps) > 1:
            assert lead_id in touched
    # Resuming from the last lead seen catches up with everything written meanwhile.
    url = f"/api/v1/leads/?updated_since={last['updated_at'].replace('+', '%2B')}&page_size=200"
    while url:
        body = http.get(url).json()
        for lead in body["results"]:
            seen.setdefault(lead["id"], []).append(lead["updated_at"])
        url = body["next"]
    assert set(Lead.objects.values_list("pk", flat=True)) == seen.keys()


def test_a_page_does_not_skip_a_row_that_an_older_transaction_commits_later(http):
    """A writer stamps a lead, then a second lead is stamped and committed first: the page must not pass
    the first one's stamp before it commits, or a client paging by updated_at would never see it."""
    from django.db import transaction

    from leads.services import lead_create

    start = http.post("/api/v1/leads/", json={"phone": "13400000000"}).json()["updated_at"]
    stamped, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                lead_create(data={"phone": "+8613400000001", "name": "慢事务"})
                stamped.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert stamped.wait(10)
    http.post("/api/v1/leads/", json={"phone": "13400000002", "name": "快事务"})
    threading.Timer(1.5, release.set).start()

    names, url = [], f"/api/v1/leads/?updated_since={start.replace('+', '%2B')}"
    while url:
        body = http.get(url).json()
        names += [lead["name"] for lead in body["results"]]
        url = body["next"]
    thread.join()
    assert "慢事务" in names and "快事务" in names
