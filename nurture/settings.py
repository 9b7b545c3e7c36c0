"""Settings for nurture, read from the environment only (see README, "Configuration")."""

from __future__ import annotations

import json
from datetime import timedelta
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
    "workspace",
    "django_htmx",
    "axes",
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
    "django_htmx.middleware.HtmxMiddleware",
    # Last: it answers a locked-out login (django-axes).
    "axes.middleware.AxesMiddleware",
]

# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins for one username from one address,
# that pair is locked out for AXES_COOLOFF_MINUTES.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "workspace/locked_out.html"
LOGIN_URL = "workspace:login"
LOGIN_REDIRECT_URL = "workspace:queue"
LOGOUT_REDIRECT_URL = "workspace:login"

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
# Batches of one pool's full pass evaluated at once, each on a database connection of its own
# (PostgreSQL, outside an outer transaction); 1 = one after the other.
NURTURE_POOL_FULL_WORKERS = env_int("NURTURE_POOL_FULL_WORKERS", 2)

# Sequences and channels. Channel → adapter (dotted path); a channel not listed, or whose adapter says
# its settings are missing, skips its touches with reason not_configured.
NURTURE_CHANNEL_ADAPTERS = {
    "console": "channels.adapters.console.ConsoleAdapter",
    "call": "channels.adapters.call.CallAdapter",  # a call task for the lead's owner
    "webhook": "channels.adapters.webhook.WebhookAdapter",  # NURTURE_WEBHOOK_CHANNEL_URL
    "sms": "channels.adapters.sms.SmsAdapter",  # SMS_PROVIDER picks Aliyun or Tencent Cloud
    "email": "channels.adapters.email.EmailAdapter",
    "wechat_oa": "channels.adapters.wechat_oa.WechatOaAdapter",
    "wecom": "channels.adapters.wecom.WecomAdapter",  # 企业群发 to one customer, confirmed in the app
    "wecom_moment": "channels.adapters.wecom_moment.WecomMomentAdapter",  # 朋友圈 tagged to due leads
}
# More or other adapters as JSON, e.g. {"sms": "channels.adapters.sms.SmsAdapter"} (tests, deployments).
NURTURE_CHANNEL_ADAPTERS.update(json.loads(env_str("NURTURE_CHANNEL_ADAPTERS", "") or "{}"))
# The demo (`make demo`, `load_demo`'s history): every channel through the console, which prints the send
# and keeps it on the touch; call tasks stay real (they are rows for the SDRs).
NURTURE_DEMO_CHANNEL_ADAPTERS = {
    **{
        channel: "channels.adapters.console.ConsoleAdapter"
        for channel in ("console", "wecom", "wecom_moment", "wechat_oa", "sms", "email", "webhook")
    },
    "call": "channels.adapters.call.CallAdapter",
}
if env_bool("NURTURE_CONSOLE_ALL_CHANNELS", False):
    NURTURE_CHANNEL_ADAPTERS = dict(NURTURE_DEMO_CHANNEL_ADAPTERS)
# Touches per lead per channel per local day, across all sequences ("*": every channel not named).
NURTURE_FREQUENCY_CAPS = {"*": env_int("NURTURE_FREQUENCY_CAP", 1)}
NURTURE_DISPATCH_BATCH = env_int("NURTURE_DISPATCH_BATCH", 500)
# A touch claimed this long ago and still `sending` belongs to a dead worker: reconcile it.
NURTURE_SENDING_LEASE_MINUTES = env_int("NURTURE_SENDING_LEASE_MINUTES", 10)
# A due touch handed to a worker this long ago and still scheduled: its task was lost, hand it out again.
NURTURE_QUEUE_LEASE_MINUTES = env_int("NURTURE_QUEUE_LEASE_MINUTES", 5)
# Circuit breaker: a channel failing this many times in a row (retryable errors) pauses for so long.
NURTURE_BREAKER_FAILURES = env_int("NURTURE_BREAKER_FAILURES", 5)
NURTURE_BREAKER_PAUSE_MINUTES = env_int("NURTURE_BREAKER_PAUSE_MINUTES", 10)
# Touches awaiting a person's confirmation (WeCom 群发, moments, call tasks) are asked about this often.
NURTURE_CONFIRM_POLL_MINUTES = env_int("NURTURE_CONFIRM_POLL_MINUTES", 5)
# A send that waits longer than its rate limit allows this long is put back for the next tick.
NURTURE_RATE_MAX_WAIT_SECONDS = env_int("NURTURE_RATE_MAX_WAIT_SECONDS", 2)
# A staff task (step mode "task") open this long past due goes to the managers.
NURTURE_TASK_DEADLINE_HOURS = env_int("NURTURE_TASK_DEADLINE_HOURS", 24)

# The SDR workspace's SLA (defaults of the settings row the admin edits: Admin → SLA and assignment settings).
# A lead handed to an SDR is followed up within NURTURE_SLA_WORKING_HOURS working hours of the working
# calendar (NURTURE_WORKDAY_START–END on the NURTURE_WORKWEEK ISO weekdays, in TIME_ZONE); after a breach it
# is reassigned NURTURE_SLA_REASSIGN_HOURS working hours later.
NURTURE_SLA_WORKING_HOURS = env_int("NURTURE_SLA_WORKING_HOURS", 4)
NURTURE_SLA_REASSIGN_HOURS = env_int("NURTURE_SLA_REASSIGN_HOURS", 4)
NURTURE_WORKDAY_START = env_str("NURTURE_WORKDAY_START", "09:00")
NURTURE_WORKDAY_END = env_str("NURTURE_WORKDAY_END", "18:00")
NURTURE_WORKWEEK = env_str("NURTURE_WORKWEEK", "1,2,3,4,5")
# How often the queue page asks for new hot leads (htmx polling).
NURTURE_QUEUE_POLL_SECONDS = env_int("NURTURE_QUEUE_POLL_SECONDS", 15)

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
# The self-built app (自建应用) whose messages forward workspace notifications to SDRs: its AgentId and
# Secret (应用管理 → the app); the app's secret, not the 客户联系 one. Unset: nothing is forwarded.
WECOM_AGENT_ID = env_int("WECOM_AGENT_ID", 0)
WECOM_AGENT_SECRET = env_str("WECOM_AGENT_SECRET")
# The welcome message to customers who add a staff member (a channel QR code's own text wins); a message
# template ({{ lead.name }}, {{ sender.name }}); set empty for none.
WECOM_WELCOME_TEXT = env_str(
    "WECOM_WELCOME_TEXT", "您好{% if lead.name %}，{{ lead.name }}{% endif %}！感谢添加，有任何问题随时找我。"
)
# WeCom server API base (tests point it at a local fake).
WECOM_API_BASE = env_str("WECOM_API_BASE", "https://qyapi.weixin.qq.com")
# WeCom's per-customer 群发 quota as set in 群发助手 → 设置群发规则: "month" (default: as many as the
# month has days), "week" (7 a week) or "day" (1 a day); counted from our own wecom touches.
WECOM_CUSTOMER_CAP_PERIOD = env_str("WECOM_CUSTOMER_CAP_PERIOD", "month")
# WeChat official account (公众号): app id and secret (sending), callback token and EncodingAESKey.
WECHAT_OA_APP_ID = env_str("WECHAT_OA_APP_ID")
WECHAT_OA_SECRET = env_str("WECHAT_OA_SECRET")
WECHAT_OA_TOKEN = env_str("WECHAT_OA_TOKEN")
WECHAT_OA_ENCODING_AES_KEY = env_str("WECHAT_OA_ENCODING_AES_KEY")
# Template message used outside the 48-hour window, and its fields as JSON {field: source}.
WECHAT_OA_TEMPLATE_ID = env_str("WECHAT_OA_TEMPLATE_ID")
WECHAT_OA_TEMPLATE_FIELDS = env_str("WECHAT_OA_TEMPLATE_FIELDS", '{"thing1": "text:20"}')
# template (always), custom (customer-service text, 48-hour window only) or auto (custom inside it).
WECHAT_OA_MODE = env_str("WECHAT_OA_MODE", "auto")
# Official-account API base (tests point it at a local fake).
WECHAT_OA_API_BASE = env_str("WECHAT_OA_API_BASE", "https://api.weixin.qq.com")
# SMS: which provider carries the "sms" channel (aliyun | tencent), its account and approved sign/template.
SMS_PROVIDER = env_str("SMS_PROVIDER", "aliyun")
# Aliyun AccessKey ID / secret, or Tencent Cloud SecretId / SecretKey.
SMS_ACCESS_KEY_ID = env_str("SMS_ACCESS_KEY_ID")
SMS_ACCESS_KEY_SECRET = env_str("SMS_ACCESS_KEY_SECRET")
# The approved signature (签名) and template (Aliyun TemplateCode / Tencent TemplateId).
SMS_SIGN_NAME = env_str("SMS_SIGN_NAME")
SMS_TEMPLATE_CODE = env_str("SMS_TEMPLATE_CODE")
# The Aliyun template variable that receives the rendered text (${content}); Tencent's is {1}.
SMS_TEMPLATE_PARAM = env_str("SMS_TEMPLATE_PARAM", "content")
# Provider API base URLs (tests point them at a local fake).
SMS_ALIYUN_ENDPOINT = env_str("SMS_ALIYUN_ENDPOINT", "https://dysmsapi.aliyuncs.com")
SMS_TENCENT_ENDPOINT = env_str("SMS_TENCENT_ENDPOINT", "https://sms.tencentcloudapi.com")
# Tencent Cloud: the SMS application (SdkAppId) and the API region.
SMS_TENCENT_SDK_APP_ID = env_str("SMS_TENCENT_SDK_APP_ID")
SMS_TENCENT_REGION = env_str("SMS_TENCENT_REGION", "ap-guangzhou")
# The opt-out words every marketing SMS must carry; appended when the text lacks them.
SMS_OPT_OUT_TEXT = env_str("SMS_OPT_OUT_TEXT", "拒收请回复R")
# Replies that opt the sender out of SMS (the whole reply, trimmed, case-insensitive).
SMS_OPT_OUT_REPLIES = env_list("SMS_OPT_OUT_REPLIES", ["退订", "TD", "T", "R", "N", "拒收", "STOP"])
# Secret the receipt/reply push URLs carry (?token=…): the providers do not sign these pushes.
SMS_RECEIPT_TOKEN = env_str("SMS_RECEIPT_TOKEN")
# Sends per second of the SMS account (token bucket shared by all workers; burst the same).
SMS_RATE_PER_SECOND = env_int("SMS_RATE_PER_SECOND", 50)
SMS_HTTP_TIMEOUT_SECONDS = env_int("SMS_HTTP_TIMEOUT_SECONDS", 10)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# The email channel is configured once the sender address is set.
EMAIL_FROM = env_str("EMAIL_FROM")
DEFAULT_FROM_EMAIL = EMAIL_FROM or "nurture@localhost"
# Django's email backend: SMTP by default; an anymail backend (e.g. anymail.backends.mailgun.EmailBackend,
# with its ANYMAIL settings) sends through that provider's API.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20)
# Subject of a nurturing email whose touch has no content title.
EMAIL_SUBJECT = env_str("EMAIL_SUBJECT")
# `Authorization: Token …` of the bounce webhook (POST /channels/email/bounces/); empty = refused.
EMAIL_WEBHOOK_SECRET = env_str("EMAIL_WEBHOOK_SECRET")
# django-anymail's settings as JSON (the ESP's API key, WEBHOOK_SECRET "user:pass" of its tracking webhooks
# at /channels/email/anymail/<esp>/tracking/), e.g. {"MAILGUN_API_KEY": "…", "WEBHOOK_SECRET": "a:b"}.
ANYMAIL = json.loads(env_str("EMAIL_ANYMAIL", "") or "{}")
# Outbound webhooks (CONTRACT §3): seconds a receiver has to answer a POST.
NURTURE_WEBHOOK_TIMEOUT_SECONDS = env_int("NURTURE_WEBHOOK_TIMEOUT_SECONDS", 5)
# POSTs in flight at once per process (threads), deliveries claimed at once, and per Celery task.
NURTURE_WEBHOOK_THREADS = env_int("NURTURE_WEBHOOK_THREADS", 8)
NURTURE_WEBHOOK_BATCH = env_int("NURTURE_WEBHOOK_BATCH", 200)
NURTURE_WEBHOOK_TASK_BATCH = env_int("NURTURE_WEBHOOK_TASK_BATCH", 25)
# A delivery claimed this long ago and still `sending` belongs to a dead worker: hand it out again.
NURTURE_WEBHOOK_LEASE_MINUTES = env_int("NURTURE_WEBHOOK_LEASE_MINUTES", 5)
# Retries with backoff stop this long after the first attempt: the delivery is `failed` (given up).
NURTURE_WEBHOOK_GIVE_UP_HOURS = env_int("NURTURE_WEBHOOK_GIVE_UP_HOURS", 24)
# The `webhook` step channel: where its touches are POSTed, and the secret that signs them (both needed).
# Webhook subscriptions may point at loopback/private addresses (only where every writer is trusted).
NURTURE_WEBHOOK_ALLOW_PRIVATE = env_bool("NURTURE_WEBHOOK_ALLOW_PRIVATE", False)
NURTURE_WEBHOOK_CHANNEL_URL = env_str("NURTURE_WEBHOOK_CHANNEL_URL")
NURTURE_WEBHOOK_CHANNEL_SECRET = env_str("NURTURE_WEBHOOK_CHANNEL_SECRET")

# Display names of stages/sources used by pages; the label strings are translated.
NURTURE_SITE_NAME = _("nurture lead nurturing")
