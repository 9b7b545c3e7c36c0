"""Asset files: kept outside MEDIA_ROOT with no URL, so a gated one comes only with its form; an ungated
one is downloaded from `/p/<slug>/file/`."""

import importlib
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import clear_url_caches

import nurture.urls
from content.models import ConsentText, ContentAsset
from leads.models import Event, Lead

pytestmark = pytest.mark.django_db
FORM = {"name": "张伟", "phone": "138 0013 8000", "company": "苏州恒立精密机械有限公司", "consent": "on"}


@pytest.fixture
def debug_urls(settings):
    """The URLconf as DEBUG builds it, serving MEDIA_ROOT at MEDIA_URL."""
    settings.DEBUG = True
    importlib.reload(nurture.urls)
    clear_url_caches()
    yield
    settings.DEBUG = False
    importlib.reload(nurture.urls)
    clear_url_caches()


def _asset(slug, *, gated, content=b"%PDF-1.4 whitepaper", **kwargs):
    asset = ContentAsset.objects.create(
        slug=slug,
        title=slug,
        form="whitepaper",
        awareness="problem_aware",
        funnel="tofu",
        gated=gated,
        **kwargs,
    )
    if content is not None:
        asset.file.save(f"{slug}.pdf", ContentFile(content))
    return asset


def test_a_gated_file_has_no_url_and_is_not_under_media_root(client, settings, debug_urls, private_media):
    asset = _asset("wp-gated", gated=True)
    path = Path(asset.file.path)
    assert path.read_bytes() == b"%PDF-1.4 whitepaper" and asset.file.name == "content/wp-gated.pdf"
    assert path.is_relative_to(private_media) and not path.is_relative_to(settings.MEDIA_ROOT)
    with pytest.raises(ValueError, match="not accessible via a URL"):
        _ = asset.file.url
    # The DEBUG route serves MEDIA_ROOT (an upload there is served), but the asset's file is not in it.
    (settings.MEDIA_ROOT / "content").mkdir(parents=True)
    (settings.MEDIA_ROOT / "content" / "public.txt").write_bytes(b"public")
    assert client.get("/media/content/public.txt").status_code == 200
    assert client.get(f"/media/{asset.file.name}").status_code == 404
    assert client.get("/media/../private/content/wp-gated.pdf").status_code in (400, 404)

    for response in (client.get("/p/wp-gated/file/"), client.head("/p/wp-gated/file/")):
        assert response.status_code == 302 and response["Location"] == "/p/wp-gated/"
    assert not Event.objects.exists()


def test_the_download_view_serves_an_ungated_file_as_an_attachment(client):
    _asset("sop-template", gated=False)
    response = client.get("/p/sop-template/file/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="sop-template.pdf"'
    assert b"".join(response.streaming_content) == b"%PDF-1.4 whitepaper"
    head = client.head("/p/sop-template/file/")
    assert head.status_code == 200 and head["Content-Disposition"].startswith("attachment")
    assert client.post("/p/sop-template/file/").status_code == 405
    assert not Event.objects.exists()


def test_the_download_view_404s_for_unknown_inactive_and_fileless_assets(client):
    _asset("retired", gated=False, active=False)
    _asset("no-file", gated=False, content=None, target_url="https://www.example.cn/wp.pdf")
    for slug in ("no-such-asset", "retired", "no-file"):
        assert client.get(f"/p/{slug}/file/").status_code == 404
    assert client.get("/p/retired/").status_code == 404


def test_the_gated_form_still_serves_the_file(client):
    ConsentText.objects.create(version="2026-01", text="同意我们就本资料与您联系。")
    _asset("wp-gated", gated=True)
    response = client.post("/p/wp-gated/", {**FORM, "consent_version": "2026-01"})
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment")
    assert b"".join(response.streaming_content) == b"%PDF-1.4 whitepaper"
    assert Lead.objects.get().consent_version == "2026-01"


def test_the_admin_shows_the_file_by_name_without_a_link(admin_client):
    asset = _asset("wp-gated", gated=True)
    page = admin_client.get(f"/admin/content/contentasset/{asset.pk}/change/").content.decode()
    assert "<code>content/wp-gated.pdf</code>" in page and 'href="/media/' not in page
