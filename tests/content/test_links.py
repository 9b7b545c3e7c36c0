"""Tracked links: opening one records the view once, stamps the asset's tags, counts viewers per asset and
per tag, marks the lead dirty; forged and revoked tokens, HEAD and link-preview fetchers record nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from django.core.files.base import ContentFile
from django.db import connection

from content.models import AssetViewer, ContentAsset, TagViewer, TrackedLink
from content.services import (
    landing_token_link,
    link_get_or_create,
    link_path,
    links_revoke,
    user_agent_is_preview,
)
from leads.models import DirtyLead, Event, LeadTag
from leads.tagging import tags_get_or_create
from tests.factories import LeadFactory

ROOT = Path(__file__).resolve().parents[2]
MANAGE = [sys.executable, str(ROOT / "manage.py")]
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.44"


def _asset(slug="wp-acq", **kwargs):
    asset = ContentAsset.objects.create(
        slug=slug,
        title="线上获客白皮书",
        form="whitepaper",
        awareness="problem_aware",
        funnel="tofu",
        target_url="https://www.example.cn/wp.pdf",
        **kwargs,
    )
    asset.tags.set(tags_get_or_create(names=["topic:线上获客", "need:全渠道获客"]).values())
    return asset


@pytest.mark.django_db
def test_opening_a_link_records_the_view_and_stamps_the_tags(client):
    asset = _asset()
    lead, other = LeadFactory(), LeadFactory()
    link = link_get_or_create(asset=asset, lead=lead, touch_id=7)
    assert link_get_or_create(asset=asset, lead=lead, touch_id=7) == link  # one link per touch
    assert (
        len(link.token) <= 16 and link.token != link_get_or_create(asset=asset, lead=other, touch_id=7).token
    )
    DirtyLead.objects.all().delete()

    response = client.get(link_path(link), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302 and response["Location"] == "https://www.example.cn/wp.pdf"
    event = Event.objects.get(lead=lead, type="content_viewed")
    assert event.properties["asset"] == "wp-acq" and event.properties["touch"] == 7
    assert event.properties["user_agent"] == BROWSER
    stamped = dict(LeadTag.objects.filter(lead=lead).values_list("tag__name", "count"))
    assert stamped == {"topic:线上获客": 1, "need:全渠道获客": 1}
    assert DirtyLead.objects.filter(lead=lead).exists()

    client.get(link_path(link), HTTP_USER_AGENT=BROWSER)
    assert Event.objects.filter(lead=lead, type="content_viewed").count() == 2
    assert dict(LeadTag.objects.filter(lead=lead).values_list("tag__name", "count"))["need:全渠道获客"] == 2
    asset.refresh_from_db()
    link.refresh_from_db()
    assert (asset.views, asset.unique_viewers, link.opens) == (2, 1, 2)
    assert AssetViewer.objects.get(asset=asset, lead=lead).views == 2
    assert set(TagViewer.objects.filter(lead=lead).values_list("views", flat=True)) == {2}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "agent"),
    [
        ("head", BROWSER),
        ("get", "facebookexternalhit/1.1"),
        ("get", "Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)"),
        ("get", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"),
        ("get", "WhatsApp/2.23.20.0"),
        ("get", "TelegramBot (like TwitterBot)"),
        ("get", ""),
    ],
)
def test_head_requests_and_link_previews_do_not_count(client, method, agent):
    asset = _asset()
    link = link_get_or_create(asset=asset, lead=LeadFactory())
    response = getattr(client, method)(link_path(link), HTTP_USER_AGENT=agent)
    assert response.status_code == 302
    assert not Event.objects.exists() and not LeadTag.objects.exists()
    asset.refresh_from_db()
    assert asset.views == 0 and TrackedLink.objects.get().opens == 0


@pytest.mark.django_db
def test_forged_and_revoked_tokens_are_404_and_record_nothing(client):
    asset = _asset()
    link = link_get_or_create(asset=asset, lead=LeadFactory())
    assert client.get("/c/AAAAAAAAAAAAAAAA/", HTTP_USER_AGENT=BROWSER).status_code == 404
    assert client.get(f"/c/{link.token[:-1]}x/", HTTP_USER_AGENT=BROWSER).status_code == 404
    assert links_revoke(links=TrackedLink.objects.filter(pk=link.pk)) == 1
    assert client.get(link_path(link), HTTP_USER_AGENT=BROWSER).status_code == 404
    assert not Event.objects.exists()
    asset.refresh_from_db()
    assert asset.views == 0


@pytest.mark.django_db
def test_a_gated_asset_sends_the_link_to_its_form_and_records_only_the_click(client):
    asset = _asset(gated=True)
    lead = LeadFactory()
    link = link_get_or_create(asset=asset, lead=lead, touch_id=9)
    response = client.get(link_path(link), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302
    path, _, query = response["Location"].partition("?")
    assert path == "/p/wp-acq/" and landing_token_link(value=parse_qs(query)["t"][0]) == link
    # The form records the view: the click is only a click (no view, no tags, no viewer).
    click = Event.objects.get()
    assert (click.type, click.lead_id, click.properties["touch"]) == ("link_clicked", lead.pk, 9)
    assert not LeadTag.objects.exists() and not AssetViewer.objects.exists()
    asset.refresh_from_db()
    link.refresh_from_db()
    assert (asset.views, link.opens) == (0, 1)
    assert client.head(link_path(link), HTTP_USER_AGENT=BROWSER)["Location"] == response["Location"]
    # A forged or tampered ?t= names no link.
    assert landing_token_link(value=f"{link.token}:forged") is None
    assert landing_token_link(value="") is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("agent", "preview"),
    [
        ("Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) AppleWebKit/537.36 Chrome/120.0 Mobile", False),
        ("Mozilla/5.0 (Linux; Android 10; CUBOT_X30 Build/QP1A.190711.020) AppleWebKit/537.36", False),
        ("Mozilla/5.0 (Linux; Android 9; Cubot Note 7) AppleWebKit/537.36 Chrome/90.0 Mobile Safari", False),
        ("Mozilla/5.0 (Linux; Android 13; V2217A) AppleWebKit/537.36 wxwork/4.1.10 MicroMessenger/7", False),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", True),
        ("Slackbot 1.0 (+https://api.slack.com/robots)", True),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", True),
        ("DingTalkBot-LinkService/1.0 (+https://open-doc.dingtalk.com/microapp/faquestions/ftpfeu)", True),
        ("Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", True),
        ("Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)", True),
    ],
)
def test_bot_is_matched_as_a_word_not_inside_a_phone_brand(agent, preview):
    assert user_agent_is_preview(agent) is preview


@pytest.mark.django_db
def test_a_cubot_phone_counts_and_googlebot_does_not(client):
    asset = _asset()
    link = link_get_or_create(asset=asset, lead=LeadFactory())
    cubot = "Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) AppleWebKit/537.36 Chrome/120.0 Mobile Safari"
    for agent in (cubot, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"):
        assert client.get(link_path(link), HTTP_USER_AGENT=agent).status_code == 302
    assert Event.objects.get().properties["user_agent"] == cubot


@pytest.mark.django_db
def test_an_ungated_file_is_a_redirect_to_its_download_view(client):
    asset = ContentAsset.objects.create(
        slug="sop-template", title="SOP 模板", form="ppt", awareness="solution_aware", funnel="mofu"
    )
    asset.file.save("sop-366.pptx", ContentFile(b"PK slides"))
    link = link_get_or_create(asset=asset, lead=LeadFactory())

    head = client.head(link_path(link), HTTP_USER_AGENT=BROWSER)
    assert head.status_code == 302 and head["Location"] == "/p/sop-template/file/"
    assert not Event.objects.exists()
    response = client.get(link_path(link), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302 and response["Location"] == head["Location"]
    assert Event.objects.filter(type="content_viewed").count() == 1
    served = client.get(response["Location"])
    assert served.status_code == 200 and b"".join(served.streaming_content) == b"PK slides"
    assert Event.objects.count() == 1  # the download itself records nothing more


@pytest.mark.django_db
def test_a_deactivated_asset_makes_its_links_and_landing_page_404(client):
    asset = _asset()
    link = link_get_or_create(asset=asset, lead=LeadFactory())
    assert client.get("/p/wp-acq/").status_code == 200
    ContentAsset.objects.filter(pk=asset.pk).update(active=False)
    assert client.get(link_path(link), HTTP_USER_AGENT=BROWSER).status_code == 404
    assert client.head(link_path(link), HTTP_USER_AGENT=BROWSER).status_code == 404
    assert client.get("/p/wp-acq/").status_code == 404
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_two_opens_one_after_the_other_count_twice(client):
    asset = _asset()
    link = link_get_or_create(asset=asset, lead=LeadFactory())
    assert [client.get(link_path(link), HTTP_USER_AGENT=BROWSER).status_code for _ in range(2)] == [302, 302]
    asset.refresh_from_db()
    link.refresh_from_db()
    assert (asset.views, asset.unique_viewers, link.opens) == (2, 1, 2)


@pytest.mark.django_db(transaction=True)
def test_concurrent_opens_count_every_view_and_each_viewer_once(live_server):
    if connection.vendor != "postgresql":
        # The SQLite test database is in memory: the live server's threads share its one connection, so
        # nothing runs concurrently; the embedded SQLite file is proven by the test below.
        pytest.skip("concurrency is proven on PostgreSQL here")
    asset = _asset()
    leads = [LeadFactory() for _ in range(3)]
    links = [link_get_or_create(asset=asset, lead=lead) for lead in leads]
    urls = [f"{live_server.url}{link_path(link)}" for link in links for _ in range(8)]

    def open_link(url):
        return httpx.get(url, headers={"User-Agent": BROWSER}, follow_redirects=False, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(open_link, urls)) == {302}
    asset.refresh_from_db()
    assert (asset.views, asset.unique_viewers) == (24, 3)
    assert Event.objects.filter(type="content_viewed").count() == 24
    assert set(LeadTag.objects.values_list("count", flat=True)) == {8}
    assert set(TrackedLink.objects.values_list("opens", flat=True)) == {8}
    assert TagViewer.objects.count() == 6 and set(TagViewer.objects.values_list("views", flat=True)) == {8}


SEED = """
import json
from content.models import ContentAsset
from content.services import link_get_or_create
from leads.services import lead_upsert
from leads.tagging import tags_get_or_create
asset = ContentAsset.objects.create(
    slug="wp-acq", title="线上获客白皮书", form="whitepaper", awareness="problem_aware", funnel="tofu",
    target_url="https://www.example.cn/wp.pdf",
)
asset.tags.set(tags_get_or_create(names=["topic:线上获客", "need:全渠道获客"]).values())
leads = [lead_upsert(data={"phone": f"+8613800000{n:03d}"}).lead for n in range(3)]
print(json.dumps([link_get_or_create(asset=asset, lead=lead).token for lead in leads]))
"""
TALLY = """
import json
from content.models import ContentAsset, TagViewer, TrackedLink
from leads.models import Event, LeadTag
asset = ContentAsset.objects.get()
print(json.dumps({
    "asset": [asset.views, asset.unique_viewers],
    "events": Event.objects.filter(type="content_viewed").count(),
    "tag_counts": sorted(set(LeadTag.objects.values_list("count", flat=True))),
    "opens": sorted(set(TrackedLink.objects.values_list("opens", flat=True))),
    "tag_viewers": sorted(TagViewer.objects.values_list("views", flat=True)),
}))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_concurrent_opens_on_the_embedded_sqlite_file_all_count(tmp_path):
    """The embedded demo's database (a SQLite file, WAL) under 8 concurrent link opens: every open is a
    302 and counts, none fails with "database is locked"."""
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")}
    env.update(NURTURE_VAR_DIR=str(tmp_path), NURTURE_INPROCESS_SCHEDULER="0", PYTHONUNBUFFERED="1")

    def manage(*args: str) -> str:
        done = subprocess.run(
            [*MANAGE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    manage("migrate", "--noinput")
    tokens = json.loads(manage("shell", "-c", SEED).strip().splitlines()[-1])
    port = _free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*MANAGE, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)

        def open_link(url):
            headers = {"User-Agent": BROWSER}
            return httpx.get(url, headers=headers, follow_redirects=False, timeout=60).status_code

        urls = [f"{base}/c/{token}/" for token in tokens for _ in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(open_link, urls))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    assert set(statuses) == {302}, log_path.read_text()[-3000:]
    tally = json.loads(manage("shell", "-c", TALLY).strip().splitlines()[-1])
    assert tally == {
        "asset": [24, 3],
        "events": 24,
        "tag_counts": [8],
        "opens": [8],
        "tag_viewers": [8] * 6,
    }
