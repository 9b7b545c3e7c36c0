"""Public pages of content: tracked links (`/c/<token>/`), gated landing pages (`/p/<slug>/`) and the
download of an ungated asset's file (`/p/<slug>/file/`); asset files have no URL of their own."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods
from django_ratelimit.core import is_ratelimited

from content.forms import LandingForm
from content.models import ConsentText, ContentAsset
from content.services import landing_submit, landing_token_link, link_open


def _file_response(asset: ContentAsset) -> FileResponse:
    name = asset.file.name.rsplit("/", 1)[-1]
    return FileResponse(asset.file.open("rb"), as_attachment=True, filename=name)


def _deliver(asset: ContentAsset) -> HttpResponse:
    """The asset itself: its file as a download, its URL, or (neither) its landing page."""
    if asset.file:
        return _file_response(asset)
    if asset.target_url:
        return HttpResponseRedirect(asset.target_url)
    return HttpResponseRedirect(reverse("content-landing", args=[asset.slug]))


def client_ip(group: str, request: HttpRequest) -> str:
    """The client's address for rate limits (a django-ratelimit key, IPv6 by /64 like its `ip` key):
    behind NURTURE_TRUSTED_PROXY_COUNT proxies, the X-Forwarded-For entry the outermost trusted proxy
    appended (entries further left are whatever the client sent); without proxies, REMOTE_ADDR."""
    remote = request.META.get("REMOTE_ADDR", "")
    candidates = [remote]
    proxies = settings.NURTURE_TRUSTED_PROXY_COUNT
    if proxies > 0:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            candidates.insert(0, hops[-proxies])
    for address in candidates:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        network = ipaddress.ip_network(f"{ip}/{64 if ip.version == 6 else 32}", strict=False)
        return str(network.network_address)
    return remote


@never_cache
@require_http_methods(["GET", "HEAD"])
def link_view(request: HttpRequest, token: str) -> HttpResponse:
    """A tracked link: 404 for a forged or revoked token, else a redirect to the asset (a gated asset's
    form first); HEAD gets the same redirect as GET."""
    opened = link_open(
        token=token[:64], method=request.method or "GET", user_agent=request.META.get("HTTP_USER_AGENT", "")
    )
    if opened is None:
        raise Http404("No such link.")
    response = HttpResponseRedirect(opened.destination)
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@never_cache
@require_http_methods(["GET", "HEAD"])
def asset_file_view(request: HttpRequest, slug: str) -> HttpResponse:
    """An ungated asset's file as a download; a gated one's comes only with its form, so a redirect there."""
    asset = get_object_or_404(ContentAsset, slug=slug, active=True)
    if asset.gated:
        return HttpResponseRedirect(reverse("content-landing", args=[asset.slug]))
    if not asset.file:
        raise Http404("No file.")
    return _file_response(asset)


@never_cache
@csrf_protect
@require_http_methods(["GET", "HEAD", "POST"])
def landing_view(request: HttpRequest, slug: str) -> HttpResponse:
    """The asset's summary and its short form; a valid submission (with consent) serves the download."""
    asset = get_object_or_404(ContentAsset.objects.prefetch_related("tags"), slug=slug, active=True)
    consent_text = ConsentText.objects.filter(active=True).order_by("-created_at", "-id").first()
    status = 200
    if request.method == "POST":
        if is_ratelimited(
            request,
            group="content-landing",
            key=client_ip,
            rate=settings.NURTURE_LANDING_RATE,
            method="POST",
            increment=True,
        ):
            form = LandingForm(consent_text=consent_text)
            return render(
                request,
                "content/landing.html",
                {"asset": asset, "form": form, "consent": consent_text, "limited": True},
                status=429,
            )
        form = LandingForm(request.POST, consent_text=consent_text)
        if form.is_valid() and consent_text is not None:
            landing_submit(
                asset=asset,
                person=form.person(),
                consent_version=consent_text.version,
                link=landing_token_link(value=request.GET.get("t", "")),
            )
            return _deliver_after_form(request, asset)
        status = 400
    else:
        form = LandingForm(consent_text=consent_text)
    return render(
        request,
        "content/landing.html",
        {"asset": asset, "form": form, "consent": consent_text},
        status=status,
    )


def _deliver_after_form(request: HttpRequest, asset: ContentAsset) -> HttpResponse:
    if asset.file or asset.target_url:
        return _deliver(asset)
    return render(request, "content/thanks.html", {"asset": asset})
