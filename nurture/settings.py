"""Settings for nurture, read from the environment only (see README, "Configuration")."""

from __future__ import annotations

import json
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from nurture.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("NURTURE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and env_bool("NURTURE_REQUIRE_SECRET_KEY", False):
        raise ImproperlyConfigured("SECRET_KEY must be set in production")
    # Development and the embedded demo only; docker-compose and real deployments set SECRET_KEY.
    SECRET_KEY = "insecure-dev-only-" + "nurture-demo-key-change-me-0123456789"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    "import_export",
    "nurture",
    "leads",
    "content",
    "sequences",
    "scoring",
    "channels.apps.ChannelsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "nurture.urls"
WSGI_APPLICATION = "nurture.wsgi.application"
ASGI_APPLICATION = "nurture.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Database: DATABASE_URL (PostgreSQL in production and CI); without it an embedded SQLite file.
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "nurture.sqlite3"),
            # IMMEDIATE: a transaction takes the write lock when it begins, so concurrent writers wait
            # (up to `timeout` seconds) instead of failing with "database is locked" on their first write.
            "OPTIONS": {
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL;",
                "transaction_mode": "IMMEDIATE",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker and shared cache. Without REDIS_URL Celery runs eagerly and the cache is local.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# The embedded demo runs the tick in a thread of the web process instead of Celery beat.
NURTURE_INPROCESS_SCHEDULER = env_bool("NURTURE_INPROCESS_SCHEDULER", not REDIS_URL)
NURTURE_TICK_SECONDS = env_int("NURTURE_TICK_SECONDS", 60)
# Gated landing-page submissions per client IP (django-ratelimit's rate syntax: "20/h", "5/10m").
NURTURE_LANDING_RATE = env_str("NURTURE_LANDING_RATE", "20/h")
# Reverse proxies in front of the site that append to X-Forwarded-For: the client IP is the entry the
# outermost one appended. 0 (no proxy): REMOTE_ADDR, and X-Forwarded-For (client-forgeable) is ignored.
NURTURE_TRUSTED_PROXY_COUNT = env_int("NURTURE_TRUSTED_PROXY_COUNT", 0)
# Where the public pages live, as messages carry tracked links: the base of their absolute URLs.
NURTURE_PUBLIC_URL = env_str("NURTURE_PUBLIC_URL", "http://127.0.0.1:8000")
# Local hour after which the first tick rescores every lead (decay moves scores without any write).
NURTURE_SCORE_NIGHTLY_HOUR = env_int("NURTURE_SCORE_NIGHTLY_HOUR", 3)
# Pools: every pool is evaluated over all leads once a night after this local hour; time-dependent
# pools (days_since, within_days) also every so many minutes, behind the per-tick sweep of leads whose
# time condition turned (leads/pools.py).
NURTURE_POOL_NIGHTLY_HOUR = env_int("NURTURE_POOL_NIGHTLY_HOUR", 3)
NURTURE_POOL_TIME_EVERY_MINUTES = env_int("NURTURE_POOL_TIME_EVERY_MINUTES", 60)
# Leads per statement of a pool's full pass: fewer statements are faster, smaller ones lock for less.
NURTURE_POOL_FULL_BATCH = env_int("NURTURE_POOL_FULL_BATCH", 250_000)

# Sequences and channels. Channel → adapter (dotted path); a channel not listed, or whose adapter says
# its settings are missing, skips its touches with reason not_configured.
NURTURE_CHANNEL_ADAPTERS = {
    "console": "channels.adapters.console.ConsoleAdapter",
    "call": "channels.adapters.console.ConsoleAdapter",
}
# More or other adapters as JSON, e.g. {"sms": "channels.adapters.sms.SmsAdapter"} (tests, deployments).
NURTURE_CHANNEL_ADAPTERS.update(json.loads(env_str("NURTURE_CHANNEL_ADAPTERS", "") or "{}"))
# Touches per lead per channel per local day, across all sequences ("*": every channel not named).
NURTURE_FREQUENCY_CAPS = {"*": env_int("NURTURE_FREQUENCY_CAP", 1)}
NURTURE_DISPATCH_BATCH = env_int("NURTURE_DISPATCH_BATCH", 500)
# A touch claimed this long ago and still `sending` belongs to a dead worker: reconcile it.
NURTURE_SENDING_LEASE_MINUTES = env_int("NURTURE_SENDING_LEASE_MINUTES", 10)
# A due touch handed to a worker this long ago and still scheduled: its task was lost, hand it out again.
NURTURE_QUEUE_LEASE_MINUTES = env_int("NURTURE_QUEUE_LEASE_MINUTES", 5)
# A staff task (step mode "task") open this long past due goes to the managers.
NURTURE_TASK_DEADLINE_HOURS = env_int("NURTURE_TASK_DEADLINE_HOURS", 24)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# --- Language and time.
LANGUAGE_CODE = env_str("LANGUAGE_CODE", "zh-hans")
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = env_str("TIME_ZONE", "Asia/Shanghai")
USE_TZ = True
# Mainland numbers are the default region for phone normalisation.
PHONE_DEFAULT_REGION = env_str("PHONE_DEFAULT_REGION", "CN")

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or not env_bool("NURTURE_COMPRESS_STATIC", False)
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
# Asset files (gated whitepapers among them): outside MEDIA_ROOT and without a URL (content/storage.py).
NURTURE_PRIVATE_MEDIA_ROOT = Path(env_str("NURTURE_PRIVATE_MEDIA_ROOT", str(VAR_DIR / "private")))
if NURTURE_PRIVATE_MEDIA_ROOT.resolve().is_relative_to(MEDIA_ROOT.resolve()):
    raise ImproperlyConfigured("NURTURE_PRIVATE_MEDIA_ROOT must not be inside MEDIA_ROOT (served at /media/)")

LOGIN_URL = "/admin/login/"
# Messages can carry a one-time secret (a new API key): keep them server-side, not in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# --- REST API.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["leads.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["leads.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["leads.auth.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env_str("API_THROTTLE_RATE", "6000/min")},
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "leads.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "nurture API",
    "DESCRIPTION": "Leads, events, pools, sequences and webhooks of the nurture lead-nurturing SCRM.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "leads.api.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "LeadStageEnum": "leads.models.Stage",
        "SequenceStatusEnum": "sequences.models.SequenceStatus",
        "ChannelEnum": "sequences.models.Channel",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- Channels (configured by later issues; a channel without settings is "not configured").
WECOM_CORP_ID = env_str("WECOM_CORP_ID")
WECOM_SECRET = env_str("WECOM_SECRET")
WECOM_TOKEN = env_str("WECOM_TOKEN")
WECOM_ENCODING_AES_KEY = env_str("WECOM_ENCODING_AES_KEY")
SMS_PROVIDER_URL = env_str("SMS_PROVIDER_URL")
SMS_API_KEY = env_str("SMS_API_KEY")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("EMAIL_FROM", "nurture@localhost")

# Display names of stages/sources used by pages; the label strings are translated.
NURTURE_SITE_NAME = _("nurture lead nurturing")
