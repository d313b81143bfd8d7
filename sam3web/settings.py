"""sam3web settings: every value comes from the environment, with defaults that let a fresh
checkout run on SQLite. Nonsense values stop start-up with ImproperlyConfigured rather than
surfacing later as a confusing failure."""

from __future__ import annotations

import os
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (1/0, yes/no, on/off), not {raw!r}")


def envint(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def envfloat(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None
    if not value >= minimum:  # also catches NaN
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {raw!r}")
    return value


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def envurl(name: str, default: str) -> str:
    """An http(s) base URL without query or fragment; returned without a trailing slash."""
    raw = os.environ.get(name, default).strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImproperlyConfigured(f"{name} must be an http:// or https:// URL, not {raw!r}")
    if parts.query or parts.fragment:
        raise ImproperlyConfigured(f"{name} must not have a query string or fragment: {raw!r}")
    return raw.rstrip("/")


DATA_DIR = Path(os.environ.get("SAM3WEB_DATA_DIR", BASE_DIR / "data")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in the data folder,
    so a fresh install is safe without anyone having to invent a key."""
    key = os.environ.get("SECRET_KEY", "").strip()
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

# bin/serve --demo: runs go to the Runflow stand-in, and every page says results are simulated.
SAM3WEB_DEMO = envbool("SAM3WEB_DEMO", False)

# The base URL at which Runflow can reach this app. Unset: no callbacks, runs are polled.
SAM3WEB_PUBLIC_URL = envurl("SAM3WEB_PUBLIC_URL", "")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])
if SAM3WEB_PUBLIC_URL:
    _public = urlsplit(SAM3WEB_PUBLIC_URL)
    CSRF_TRUSTED_ORIGINS.append(f"{_public.scheme}://{_public.netloc}")
    if _public.hostname and _public.hostname not in ALLOWED_HOSTS and "*" not in ALLOWED_HOSTS:
        ALLOWED_HOSTS.append(_public.hostname)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "accounts",
    # Before django_tasks_db: its `db_worker` command is replaced by segmentation's.
    "segmentation",
    "api",
    "django_tasks_db",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # A 503 that says so, not a server error, while the database is unreachable.
    "sam3web.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a signed-in user unless its view says otherwise.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "sam3web.urls"
WSGI_APPLICATION = "sam3web.wsgi.application"

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
                "sam3web.context_processors.install",
            ],
        },
    },
]

try:
    _db = dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'sam3web.sqlite3'}",
        conn_max_age=0,
    )
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Django can use: {exc}") from exc
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the worker writes; IMMEDIATE transactions take the
    # write lock up front, so concurrent writers wait (timeout) instead of failing with
    # "database is locked" when a read transaction tries to upgrade.
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory, so a worker process in the tests sees the same database; one per
    # test process, so test runs side by side don't share it.
    _db["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # A database host that does not answer fails a request (a 503 page) in seconds, not after
    # the system's TCP time-out of minutes; anything the URL says itself wins.
    _db["OPTIONS"] = {"connect_timeout": 5, **_db.get("OPTIONS", {})}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "run_list"
LOGOUT_REDIRECT_URL = "login"
# The first-admin page's setup code (accounts/setup.py): after this many wrong codes within the
# window (seconds), every try is refused for the cooldown (seconds), from any address.
SAM3WEB_SETUP_MAX_WRONG = 5
SAM3WEB_SETUP_WINDOW = 10 * 60
SAM3WEB_SETUP_COOLDOWN = 10 * 60

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request while it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media")).resolve()
# Media is served by a signed-in view, never as a public folder.
MEDIA_URL = "/media/"

# Media in an S3-compatible bucket when AWS_STORAGE_BUCKET_NAME is set (django-storages' own
# variable names). The bucket stays private: pages get files through the app's URLs, which check
# access and then redirect to a link signed for SAM3WEB_S3_URL_TTL seconds.
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "").strip()
SAM3WEB_S3_URL_TTL = envint("SAM3WEB_S3_URL_TTL", 300, minimum=10)
# Seconds between tries while the bucket cannot be reached to store a run's masks (doubling up
# to the maximum); the run waits as long as it takes.
SAM3WEB_STORAGE_RETRY_FIRST = envfloat("SAM3WEB_STORAGE_RETRY_FIRST", 2.0, minimum=0.1)
SAM3WEB_STORAGE_RETRY_MAX = envfloat("SAM3WEB_STORAGE_RETRY_MAX", 60.0, minimum=0.1)


def s3_storage(bucket: str) -> dict[str, Any]:
    """STORAGES["default"] for ``bucket``; the other AWS_* variables are read here too, so a
    test can switch storages with the environment it gives a worker."""
    from botocore.config import Config

    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL", "").strip() or None,
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID", "").strip() or None,
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "").strip() or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME", "").strip() or None,
            "default_acl": None,  # the bucket's own: private
            "querystring_auth": True,
            "querystring_expire": SAM3WEB_S3_URL_TTL,
            "file_overwrite": False,
            # A bucket that cannot be reached fails a request in seconds, not minutes: the
            # callers wait and try again themselves (tasks.copy_artifacts) or say so (forms).
            "client_config": Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 2, "mode": "standard"},
                signature_version="s3v4",
            ),
        },
    }


STORAGES = {
    "default": (
        s3_storage(AWS_STORAGE_BUCKET_NAME)
        if AWS_STORAGE_BUCKET_NAME
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    ),
    "staticfiles": {
        "BACKEND": (
            "sam3web.storage.StaticStorage"  # WhiteNoise's, with ES module imports hashed
            if envbool("SAM3WEB_STATIC_MANIFEST", True)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG or not envbool("SAM3WEB_STATIC_MANIFEST", True)

# Uploads: the image field enforces SAM3WEB_MAX_IMAGE_BYTES; everything else is small.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Django's two handlers, the second saying so in a sentence when the temporary disk is full.
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "segmentation.imaging.uploads.TemporaryUploadHandler",
]

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Behind a reverse proxy that ends TLS: it says which scheme the browser used. Only set this
# when the proxy always sets (or strips) X-Forwarded-Proto, or anyone could claim https.
if envbool("SAM3WEB_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Served over HTTPS (the public URL says so, or SAM3WEB_HTTPS): plain HTTP is redirected,
# browsers are told to use HTTPS from now on, and cookies never travel in clear.
SAM3WEB_HTTPS = envbool("SAM3WEB_HTTPS", SAM3WEB_PUBLIC_URL.startswith("https://"))
if SAM3WEB_HTTPS:
    SECURE_SSL_REDIRECT = True
    # A load balancer checks health over plain HTTP, and a redirect is not an answer.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = envint("SAM3WEB_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SAM3WEB_HSTS_INCLUDE_SUBDOMAINS", True)
    # Preloading is a promise to browsers' built-in lists that is slow to undo: opt-in only.
    SECURE_HSTS_PRELOAD = envbool("SAM3WEB_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}

# --- Runflow -------------------------------------------------------------------------------
RUNFLOW_API_KEY = os.environ.get("RUNFLOW_API_KEY", "").strip()
RUNFLOW_BASE_URL = envurl("RUNFLOW_BASE_URL", "https://api.runflow.io")
# Comma-separated, so a secret can be rotated while the old one is still valid.
RUNFLOW_CALLBACK_SECRETS = envlist("RUNFLOW_CALLBACK_SECRET", [])
RUNFLOW_TIMEOUT = envfloat("RUNFLOW_TIMEOUT", 30.0, minimum=1.0)
RUNFLOW_MAX_ATTEMPTS = envint("RUNFLOW_MAX_ATTEMPTS", 5, minimum=1)
RUNFLOW_BACKOFF_BASE = envfloat("RUNFLOW_BACKOFF_BASE", 0.5)
RUNFLOW_BACKOFF_MAX = envfloat("RUNFLOW_BACKOFF_MAX", 30.0)
# Images up to this size go inline as a data: URI; larger ones through the asset upload.
RUNFLOW_INLINE_MAX_BYTES = envint("RUNFLOW_INLINE_MAX_BYTES", 1024 * 1024)
# How long a worker may hold a run while submitting it before another worker may take over
# (longer than the client's worst case: every attempt timing out, with backoff between).
SAM3WEB_SUBMIT_LEASE = envint("SAM3WEB_SUBMIT_LEASE", 600, minimum=1)
# Workers write a heartbeat this often (seconds); one silent for WORKER_DEAD_AFTER seconds is
# taken for dead, and the workers still running take its tasks over.
SAM3WEB_WORKER_HEARTBEAT = envfloat("SAM3WEB_WORKER_HEARTBEAT", 2.0, minimum=0.1)
SAM3WEB_WORKER_DEAD_AFTER = envfloat("SAM3WEB_WORKER_DEAD_AFTER", 15.0, minimum=0.5)

# --- Results ----------------------------------------------------------------------------------
# Callbacks larger than this are refused (413); polling then fetches the result instead.
SAM3WEB_CALLBACK_MAX_BYTES = envint("SAM3WEB_CALLBACK_MAX_BYTES", 8 * 1024 * 1024, minimum=1024)
# Polling Runflow: the first poll after this many seconds, then backing off up to the maximum.
SAM3WEB_POLL_FIRST = envfloat("SAM3WEB_POLL_FIRST", 0.25, minimum=0.05)
SAM3WEB_POLL_MAX_INTERVAL = envfloat("SAM3WEB_POLL_MAX_INTERVAL", 30.0, minimum=0.1)
# With callbacks expected, the safety-net poll waits this long for the callback first.
SAM3WEB_CALLBACK_GRACE = envfloat("SAM3WEB_CALLBACK_GRACE", 30.0, minimum=0.0)
# The run page's long poll: a request waits at most this long for the run to change.
SAM3WEB_LIVE_WAIT = envfloat("SAM3WEB_LIVE_WAIT", 25.0, minimum=0.0)
# A run with no result after this many seconds is marked stale (a person can check again).
SAM3WEB_POLL_DEADLINE = envint("SAM3WEB_POLL_DEADLINE", 30 * 60, minimum=1)
# Downloading Runflow's masks and previews into our storage.
SAM3WEB_ARTIFACT_TIMEOUT = envfloat("SAM3WEB_ARTIFACT_TIMEOUT", 30.0, minimum=0.1)
SAM3WEB_ARTIFACT_MAX_BYTES = envint("SAM3WEB_ARTIFACT_MAX_BYTES", 50 * 1024 * 1024, minimum=1)
# Seconds before the second try of a download that may pass (a 5xx, a time-out); doubled after.
SAM3WEB_ARTIFACT_BACKOFF = envfloat("SAM3WEB_ARTIFACT_BACKOFF", 0.5)
# Runflow's list price per image: shown, marked as an estimate, until a run's real cost arrives.
SAM3WEB_PRICE_PER_IMAGE = Decimal("0.005")
# The usage page keeps the figures of past months once they are this many days over (a late
# cost still arrives just after a month ends); 0: as soon as a month has ended.
SAM3WEB_USAGE_SETTLE_DAYS = envint("SAM3WEB_USAGE_SETTLE_DAYS", 2, minimum=0)


def envdollars(name: str) -> Decimal | None:
    """An amount of dollars ("25", "12.50"); unset, empty or "none": no limit."""
    raw = os.environ.get(name, "").strip()
    if raw.lower() in ("", "none"):
        return None
    try:
        value = Decimal(raw.removeprefix("$"))
    except ArithmeticError:
        raise ImproperlyConfigured(f"{name} must be an amount of dollars, not {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be zero or more dollars, not {raw!r}")
    return value.quantize(Decimal("0.01"))


# --- The team's API (/v1/) and budgets ----------------------------------------------------------
# The whole team's spending a month, on top of each teammate's own budget; unset: no limit.
SAM3WEB_TEAM_MONTHLY_BUDGET = envdollars("SAM3WEB_TEAM_MONTHLY_BUDGET")
# Runs each teammate may create through the API in any minute.
SAM3WEB_API_RATE_PER_MINUTE = envint("SAM3WEB_API_RATE_PER_MINUTE", 120, minimum=1)
# A create body larger than this is refused (413): an inline data: URI image of about 6 MB;
# larger images go by URL.
SAM3WEB_API_MAX_BODY_BYTES = envint("SAM3WEB_API_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024)
# How long the signed links to a run's files in API answers and callbacks keep working.
SAM3WEB_API_FILE_URL_TTL = envint("SAM3WEB_API_FILE_URL_TTL", 7 * 24 * 3600, minimum=24 * 3600)
# Each attempt to deliver a callback to an API caller waits at most this long for an answer.
SAM3WEB_CALLER_CALLBACK_TIMEOUT = envfloat("SAM3WEB_CALLER_CALLBACK_TIMEOUT", 10.0, minimum=0.1)
# Seconds between the attempts (Runflow's: 1 s, then 2 s); 3 attempts in all.
SAM3WEB_CALLER_CALLBACK_BACKOFF = envfloat("SAM3WEB_CALLER_CALLBACK_BACKOFF", 1.0)

# --- Image intake -----------------------------------------------------------------------------
SAM3WEB_MAX_IMAGE_BYTES = envint("SAM3WEB_MAX_IMAGE_BYTES", 50 * 1024 * 1024, minimum=1)
# One batch upload (all its files together, ZIPs included) streams to disk up to this many bytes.
SAM3WEB_BATCH_MAX_UPLOAD_BYTES = envint("SAM3WEB_BATCH_MAX_UPLOAD_BYTES", 4 * 1024**3, minimum=1)
# Refused before decoding: 50 megapixels is a 8660x5773 photo, and ~150 MB once decoded.
SAM3WEB_MAX_IMAGE_PIXELS = envint("SAM3WEB_MAX_IMAGE_PIXELS", 50_000_000, minimum=1)
SAM3WEB_FETCH_TIMEOUT = envfloat("SAM3WEB_FETCH_TIMEOUT", 20.0, minimum=0.1)
SAM3WEB_FETCH_MAX_REDIRECTS = envint("SAM3WEB_FETCH_MAX_REDIRECTS", 5)
# Pages and the viewer load a copy of each larger image whose long side is at most this many
# pixels (masks and coordinates stay in the original's pixels); 0: no copies, pages load the
# original.
SAM3WEB_DISPLAY_SIZE = envint("SAM3WEB_DISPLAY_SIZE", 2048)
if 0 < SAM3WEB_DISPLAY_SIZE < 256:
    raise ImproperlyConfigured(
        f"SAM3WEB_DISPLAY_SIZE must be 0 (no display copies) or at least 256, not "
        f"{SAM3WEB_DISPLAY_SIZE}"
    )
# Only the test suite turns this on: image URLs may then point at loopback/private hosts.
SAM3WEB_FETCH_ALLOW_PRIVATE = False


def _outbound_allow(name: str) -> list[str]:
    """Host names, IP addresses and networks (CIDR) that image and callback URLs may reach
    although they are private: a pipeline on the team's own network."""
    import ipaddress
    import re

    items = envlist(name, [])
    for item in items:
        try:
            ipaddress.ip_network(item.strip("[]"), strict=False)
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?", item):
            raise ImproperlyConfigured(
                f"{name} takes host names, IP addresses and networks (10.0.0.0/8), "
                f"separated by commas; {item!r} is none of these"
            )
    return [item.strip("[]").lower() for item in items]


SAM3WEB_OUTBOUND_ALLOW = _outbound_allow("SAM3WEB_OUTBOUND_ALLOW")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The process in every line: web, worker and callbacks run in several processes, and one
    # run is followed through them by its id (lines read "run=<id> event=<name> ...").
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- Operating it ----------------------------------------------------------------------------
# /healthz (sam3web.health): unhealthy when the oldest task ready to run has waited longer than
# this many seconds, and every check is given at most SAM3WEB_HEALTH_TIMEOUT seconds.
SAM3WEB_HEALTH_MAX_QUEUE_AGE = envint("SAM3WEB_HEALTH_MAX_QUEUE_AGE", 300, minimum=1)
SAM3WEB_HEALTH_TIMEOUT = envfloat("SAM3WEB_HEALTH_TIMEOUT", 3.0, minimum=0.1)
# `manage.py prune` (segmentation.prune): the workers run it every SAM3WEB_PRUNE_INTERVAL
# seconds (0: never; the command still works by hand); finished tasks' rows are kept this many
# days.
SAM3WEB_PRUNE_INTERVAL = envint("SAM3WEB_PRUNE_INTERVAL", 6 * 3600)
SAM3WEB_PRUNE_TASKS_AFTER = envint("SAM3WEB_PRUNE_TASKS_AFTER", 7, minimum=1)

# Batches (segmentation.batches): the most images one batch takes, and the most batch runs at
# Runflow at once across all batches (a run from the form never waits behind them).
SAM3WEB_BATCH_MAX_IMAGES = envint("SAM3WEB_BATCH_MAX_IMAGES", 1000, minimum=1)
SAM3WEB_BATCH_CONCURRENCY = envint("SAM3WEB_BATCH_CONCURRENCY", 8, minimum=1)
# A batch's upload has a file part per image (Django's default stops at 100): room for the
# most images a batch takes, a ZIP, and a few more, so the form can say what was too many.
DATA_UPLOAD_MAX_NUMBER_FILES = SAM3WEB_BATCH_MAX_IMAGES + 10
