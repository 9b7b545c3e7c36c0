from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from channels.api import CallTaskViewSet, WebhookSubscriptionViewSet
from channels.email_views import unsubscribe_view
from content.api import ContentAssetViewSet
from content.views import asset_file_view, landing_view, link_view
from leads.api.pools import PoolViewSet
from leads.api.views import EventView, LeadViewSet
from nurture import views
from sequences.api import SequenceViewSet, TouchViewSet

router = SimpleRouter(trailing_slash=True)
router.register("leads", LeadViewSet, basename="lead")
router.register("pools", PoolViewSet, basename="pool")
router.register("content", ContentAssetViewSet, basename="content")
router.register("sequences", SequenceViewSet, basename="sequence")
router.register("touches", TouchViewSet, basename="touch")
router.register("webhooks", WebhookSubscriptionViewSet, basename="webhook")
router.register("call-tasks", CallTaskViewSet, basename="call-task")

api_v1 = [
    *router.urls,
    path("events/", EventView.as_view(), name="events"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("c/<str:token>/", link_view, name="content-link"),
    path("u/<str:token>/", unsubscribe_view, name="unsubscribe"),  # one-click unsubscribe (RFC 8058)
    path("p/<slug:slug>/", landing_view, name="content-landing"),
    path("p/<slug:slug>/file/", asset_file_view, name="content-file"),
    path("api/v1/", include(api_v1)),
    path("channels/", include("channels.urls")),
    path("workspace/", include("workspace.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Uploads with DEBUG, as `make demo` runs; in production the proxy serves MEDIA_URL. Asset files are not
    # among them (NURTURE_PRIVATE_MEDIA_ROOT): the content views serve those.
    *static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT),
]

handler404 = "nurture.views.not_found"
