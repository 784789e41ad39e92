"""Fieldsync settings: one file, driven by environment variables.

Unset, everything falls back to the embedded default (SQLite under var/, Celery tasks run
eagerly in-process, files under var/media). A bad value stops start-up with a message that
names the variable, so a typo in production never silently picks a default.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from botocore.config import Config as BotoConfig
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FIELDSYNC_VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, *, schemes: set[str]) -> str:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    parsed = urlparse(raw)
    if parsed.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        # Name only the scheme: the rest of the URL may carry a password into the logs.
        raise ImproperlyConfigured(f"{name} must be a URL with scheme {allowed}, got scheme {parsed.scheme!r}")
    return raw


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "django-insecure-fieldsync-development-only"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "audit",
    "attachments",
    "records",
    "approvals",
    "sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

_default_db_url = f"sqlite:///{VAR_DIR / 'fieldsync.sqlite3'}"
_db_url = env_str("DATABASE_URL", _default_db_url).strip() or _default_db_url
_db_conn_max_age = env_int("DB_CONN_MAX_AGE", 60)
# Only the two backends this project is built and tested for (mysqlclient is installed; a
# postgres:// URL would only fail later, at the first query, without naming the variable).
_db_engines = {"sqlite": "django.db.backends.sqlite3", "mysql": "django.db.backends.mysql"}
_db_scheme = urlparse(_db_url).scheme
if _db_scheme not in _db_engines:
    raise ImproperlyConfigured(f"DATABASE_URL must start with sqlite:// or mysql://, got scheme {_db_scheme!r}")
try:
    _db = dj_database_url.parse(_db_url, conn_max_age=_db_conn_max_age)
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
if _db.get("ENGINE") != _db_engines[_db_scheme] or not _db.get("NAME"):
    raise ImproperlyConfigured("DATABASE_URL must name a database (mysql://user:password@host:3306/name)")

if _db["ENGINE"] == "django.db.backends.mysql":
    _db["OPTIONS"] = {
        "charset": "utf8mb4",
        # Strict mode turns silent truncation into an error; READ COMMITTED lets the
        # idempotency re-read after a duplicate-key error see the row the winner committed
        # (REPEATABLE READ would keep showing the snapshot from before it).
        "init_command": "SET sql_mode='STRICT_TRANS_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION'",
        "isolation_level": "read committed",
        **_db.get("OPTIONS", {}),
    }
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("TEST", {})
    _db["TEST"].update({"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"})
elif _db["ENGINE"] == "django.db.backends.sqlite3":
    if _db["NAME"] != ":memory:":
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {
        # SQLite serialises writers; IMMEDIATE takes the write lock at BEGIN so two writers
        # wait for each other instead of failing with "database is locked" on upgrade.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, Celery -------------------------------------------------------------------

REDIS_URL = env_url("REDIS_URL", schemes={"redis", "rediss"})

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
if not CELERY_TASK_ALWAYS_EAGER and not REDIS_URL:
    # The in-memory broker lives in one process: no worker would ever see those tasks.
    raise ImproperlyConfigured("CELERY_TASK_ALWAYS_EAGER=0 needs REDIS_URL (a broker the workers share)")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 120, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 150, minimum=1)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT}) must be above "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT}), or tasks never get to clean up"
    )
CELERY_RESULT_EXPIRES = timedelta(days=1)
# A late-acked task comes back after the visibility timeout if its worker died; it must be
# longer than the hard time limit, or a slow but healthy task would run twice.
_visibility_timeout = env_int("CELERY_VISIBILITY_TIMEOUT", 600, minimum=1)
if _visibility_timeout <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT ({_visibility_timeout}) must be above CELERY_TASK_TIME_LIMIT "
        f"({CELERY_TASK_TIME_LIMIT}), or a slow task is handed to a second worker while it still runs"
    )
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": _visibility_timeout}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "purge-expired-ledger-entries": {
        "task": "sync.tasks.purge_expired_ledger_entries",
        "schedule": timedelta(hours=6),
    },
    "sweep-attachments": {
        "task": "attachments.tasks.sweep_attachments",
        "schedule": timedelta(minutes=5),
    },
}

# --- Storage --------------------------------------------------------------------------------

MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_URL = "/static/"

AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_url("AWS_S3_ENDPOINT_URL", schemes={"http", "https"}) or None,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
            "querystring_expire": env_int("AWS_QUERYSTRING_EXPIRE", 300, minimum=1),
            # boto3 >= 1.36 sends new default checksums that S3-compatible servers reject
            # (django-storages #1482); only send them where S3 requires them.
            "client_config": BotoConfig(
                signature_version="s3v4",
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Attachments (docs/attachments.md) ------------------------------------------------------

ATTACHMENT_MAX_BYTES = env_int("ATTACHMENT_MAX_BYTES", 256 * 1024 * 1024, minimum=1)
ATTACHMENT_SIMPLE_MAX_BYTES = env_int("ATTACHMENT_SIMPLE_MAX_BYTES", 32 * 1024 * 1024, minimum=1)
# Partial tus uploads wait here. Every app server must see the same directory (a shared volume)
# when there is more than one: the chunks of one upload may reach any of them.
ATTACHMENT_STAGING_DIR = Path(env_str("ATTACHMENT_STAGING_DIR", str(VAR_DIR / "uploads")))
ATTACHMENT_UPLOAD_EXPIRY = timedelta(hours=env_int("ATTACHMENT_UPLOAD_EXPIRY_HOURS", 7 * 24, minimum=1))
# Devices stay offline for weeks: a file uploaded before its record's push waits this long.
ATTACHMENT_UNLINKED_GRACE = timedelta(days=env_int("ATTACHMENT_UNLINKED_GRACE_DAYS", 30, minimum=1))
# Seconds a PATCH may go without receiving a byte before another request may take the upload over.
ATTACHMENT_PATCH_LEASE = env_int("ATTACHMENT_PATCH_LEASE", 60, minimum=1)
# A verification holds its attachment this long; past it, the sweeper hands it to another worker.
# Above the task's hard time limit, or a slow but healthy verification runs twice (harmlessly).
ATTACHMENT_VERIFY_LEASE = env_int("ATTACHMENT_VERIFY_LEASE", CELERY_TASK_TIME_LIMIT + 30, minimum=1)
ATTACHMENT_VERIFY_MAX_ATTEMPTS = env_int("ATTACHMENT_VERIFY_MAX_ATTEMPTS", 5, minimum=1)
# The sweeper leaves a fresh upload to the task enqueued on commit for this long.
ATTACHMENT_ENQUEUE_GRACE = timedelta(seconds=env_int("ATTACHMENT_ENQUEUE_GRACE", 120, minimum=0))
ATTACHMENT_MAX_IMAGE_PIXELS = env_int("ATTACHMENT_MAX_IMAGE_PIXELS", 64_000_000, minimum=1)
ATTACHMENT_THUMBNAIL_SIZE = 320
# Caps on the structural PDF scan (pypdf), which looks inside compressed object streams. Past
# them the file is rejected as pdf_too_complex: a crafted PDF must not take a worker's memory or
# its whole time limit. Beyond PARSE_MAX_BYTES pypdf (which holds the file in memory) is not run.
ATTACHMENT_PDF_PARSE_MAX_BYTES = env_int("ATTACHMENT_PDF_PARSE_MAX_BYTES", 64 * 1024 * 1024, minimum=1)
ATTACHMENT_PDF_MAX_OBJECTS = env_int("ATTACHMENT_PDF_MAX_OBJECTS", 100_000, minimum=1)
ATTACHMENT_PDF_MAX_STREAM_BYTES = env_int("ATTACHMENT_PDF_MAX_STREAM_BYTES", 16 * 1024 * 1024, minimum=1)
ATTACHMENT_PDF_SCAN_SECONDS = env_int("ATTACHMENT_PDF_SCAN_SECONDS", 30, minimum=1)
# Lifetime of a presigned S3 download URL: long enough to start the download, short enough
# that a leaked link is soon useless.
ATTACHMENT_DOWNLOAD_URL_SECONDS = env_int("ATTACHMENT_DOWNLOAD_URL_SECONDS", 60, minimum=1)

# --- Auth, i18n -----------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- API ------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["sync.authentication.DeviceTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.api.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.DeviceRateThrottle"],
    # Proxies in front of the app servers whose X-Forwarded-For is trusted for the client address
    # (login throttling). 0: REMOTE_ADDR, which a client cannot forge.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fieldsync device API",
    "DESCRIPTION": "Sync API for offline-first field devices. See docs/sync-protocol.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs are public and read no credentials: a stale token does not lock a
    # developer out of the documentation.
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.openapi.document_common_errors",
    ],
}

# Rate limits and input limits (docs/security.md). Counters live in the cache: Redis when
# REDIS_URL is set, so every app server counts together.
API_DEVICE_RATE = env_str("API_DEVICE_RATE", "6000/min").strip()
if API_DEVICE_RATE and not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", API_DEVICE_RATE):
    raise ImproperlyConfigured(
        f"API_DEVICE_RATE must be a rate like 600/min (or empty: no limit), got {API_DEVICE_RATE!r}"
    )
LOGIN_FAILURES_PER_USERNAME = env_int("LOGIN_FAILURES_PER_USERNAME", 5, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = env_int("LOGIN_FAILURES_PER_ADDRESS", 50, minimum=1)
LOGIN_FAILURE_WINDOW = env_int("LOGIN_FAILURE_WINDOW", 15 * 60, minimum=1)
THROTTLE_KEY_PREFIX = "throttle"
# Any string inside a record's data, and any key of an object in it (record schemas may set
# tighter maxLength per field).
SYNC_MAX_STRING_CHARS = env_int("SYNC_MAX_STRING_CHARS", 10_000, minimum=1)
SYNC_MAX_KEY_CHARS = env_int("SYNC_MAX_KEY_CHARS", 128, minimum=1)

# Sync limits (docs/sync-protocol.md).
SYNC_MAX_ACTIONS_PER_PUSH = env_int("SYNC_MAX_ACTIONS_PER_PUSH", 500, minimum=1)
SYNC_MAX_PUSH_BYTES = env_int("SYNC_MAX_PUSH_BYTES", 5 * 1024 * 1024, minimum=1024)
SYNC_MAX_PULL_LIMIT = 1000
SYNC_LEDGER_RETENTION_DAYS = env_int("SYNC_LEDGER_RETENTION_DAYS", 90, minimum=90)
DEVICE_LAST_SEEN_INTERVAL = timedelta(minutes=1)

# Audit trail (docs/audit.md). 0 keeps the journal forever; otherwise `manage.py audit_purge`
# deletes events older than this many days (at least a year: it is the compliance record).
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 0)
if 0 < AUDIT_RETENTION_DAYS < 365:
    raise ImproperlyConfigured(
        f"AUDIT_RETENTION_DAYS must be 0 (keep forever) or at least 365, got {AUDIT_RETENTION_DAYS}"
    )
# The admin dashboard lists devices not seen for this many days.
DASHBOARD_SILENT_DEVICE_DAYS = env_int("DASHBOARD_SILENT_DEVICE_DAYS", 7, minimum=1)

# Django refuses bodies over this before our view sees them; push enforces its own (smaller)
# limit with a clear 413, so this only has to be above it.
DATA_UPLOAD_MAX_MEMORY_SIZE = SYNC_MAX_PUSH_BYTES + 1024 * 1024

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").strip().upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# --- HTTPS and cookies (docs/security.md) -----------------------------------------------------

# Staff sessions end after a working day, not Django's two weeks.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600, minimum=60)
if not DEBUG:
    # TLS ends at the proxy in front of gunicorn; it must set X-Forwarded-Proto (overwriting
    # whatever a client sent), or a request over plain HTTP would pass for HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    # Off by default: the proxy redirects plain HTTP (a device's POST sent over HTTP has already
    # exposed its token by the time any redirect answers). Load balancers probe /healthz over
    # plain HTTP on the app servers themselves, so it is exempt when this is on.
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    # SecurityMiddleware sends HSTS on HTTPS responses only. Subdomains and preload bind the
    # whole domain, so they are the operator's choice.
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
