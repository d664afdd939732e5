"""Settings, read from the environment (and a `.env` file); README lists every variable."""

import ipaddress
from pathlib import Path

import environ
from csp import constants as csp
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

_INSECURE_KEY = "insecure-development-key-never-use-in-production"
SECRET_KEY = env("SECRET_KEY", default=_INSECURE_KEY if DEBUG else "")

PORTAL_BASE_DOMAIN = env("PORTAL_BASE_DOMAIN", default="localhost").lower()
PORTAL_TENANT_ROUTING = env("PORTAL_TENANT_ROUTING", default="subdomain")
PORTAL_TRUSTED_PROXIES = env.list("PORTAL_TRUSTED_PROXIES", default=[])
PORTAL_STORAGE_ROOT = Path(env("PORTAL_STORAGE_ROOT", default=str(BASE_DIR / ".var" / "storage")))
# The OHIF viewer's files (`python -m studies.viewer.bundle`, run by `make install`), served
# below STATIC_URL + "viewer/"; each tenant's /viewer/ page and app-config.js come from Django.
PORTAL_VIEWER_ROOT = Path(env("PORTAL_VIEWER_ROOT", default=str(BASE_DIR / ".var" / "viewer")))
PORTAL_DICOM_PORT = env.int("PORTAL_DICOM_PORT", default=11112)
# Of the gateway's 64 simultaneous associations: at most this many for one tenant, and for
# one peer address, so one hospital's (or one address's) modalities cannot take every slot.
# Gateway processes sharing the DICOM port (SO_REUSEPORT): one per core uses them all.
PORTAL_DICOM_PROCESSES = env.int("PORTAL_DICOM_PROCESSES", default=1)
PORTAL_DICOM_TENANT_ASSOCIATIONS = env.int("PORTAL_DICOM_TENANT_ASSOCIATIONS", default=16)
PORTAL_DICOM_PEER_ASSOCIATIONS = env.int("PORTAL_DICOM_PEER_ASSOCIATIONS", default=8)
# DICOM TLS (a second gateway port; 0 turns it off): the gateway's certificate chain and key
# (PEM), and the CA whose client certificates remote nodes may be pinned to.
PORTAL_DICOM_TLS_PORT = env.int("PORTAL_DICOM_TLS_PORT", default=0)
# The host name modalities are given on the dashboard and settings page (the gateway's ports
# are published as they are): the base domain unless the DICOM traffic has a name of its own.
PORTAL_DICOM_PUBLIC_HOST = env("PORTAL_DICOM_PUBLIC_HOST", default="") or PORTAL_BASE_DOMAIN
PORTAL_DICOM_TLS_CERTIFICATE = env("PORTAL_DICOM_TLS_CERTIFICATE", default="")
PORTAL_DICOM_TLS_KEY = env("PORTAL_DICOM_TLS_KEY", default="")
PORTAL_DICOM_TLS_CLIENT_CA = env("PORTAL_DICOM_TLS_CLIENT_CA", default="")
# Networks (CIDRs) of remote nodes the archive may connect to although they are not globally
# routable: the hospital LAN of an on-premises deployment. Loopback, private, link-local and
# other internal addresses are refused otherwise (C-ECHO, C-MOVE destinations).
PORTAL_DICOM_ALLOWED_NETWORKS = env.list("PORTAL_DICOM_ALLOWED_NETWORKS", default=[])
for _network in PORTAL_DICOM_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _error:
        raise ImproperlyConfigured(f"PORTAL_DICOM_ALLOWED_NETWORKS: {_error}") from None
# Object storage media: endpoints a tenant may name although they are not public HTTPS hosts
# (an in-house MinIO: `http://minio.internal:9000`). Any other endpoint must be https:// on a
# globally routable address, so a tenant cannot aim the archive at internal services.
PORTAL_S3_ALLOWED_ENDPOINTS = [
    _url.rstrip("/") for _url in env.list("PORTAL_S3_ALLOWED_ENDPOINTS", default=[])
]
# Objects at least this large are uploaded in parts of this size (multipart upload).
PORTAL_S3_MULTIPART_BYTES = env.int("PORTAL_S3_MULTIPART_BYTES", default=64 << 20)
# Seconds one S3 request may take to connect or to answer, and attempts before giving up
# (503 SlowDown, throttling, timeouts and dropped connections are retried with backoff).
PORTAL_S3_TIMEOUT = env.int("PORTAL_S3_TIMEOUT", default=20)
PORTAL_S3_ATTEMPTS = env.int("PORTAL_S3_ATTEMPTS", default=5)
# Objects read for parsing (metadata, frames, rendering, C-MOVE) are kept on local disk below
# each tenant's storage root, at most this many bytes per tenant (least recently used go).
PORTAL_S3_CACHE_BYTES = env.int("PORTAL_S3_CACHE_BYTES", default=2 << 30)
# Seals stored credentials (object storage secret keys). Default: derived from SECRET_KEY, so
# rotating SECRET_KEY without setting this to the old derivation means re-entering them.
PORTAL_SEALING_KEY = env("PORTAL_SEALING_KEY", default="")
# Seconds an association may stay silent before the gateway aborts it (its slot comes back).
PORTAL_DICOM_IDLE_TIMEOUT = env.int("PORTAL_DICOM_IDLE_TIMEOUT", default=60)
# How links sent to people (set-password links) are written: scheme and public port.
PORTAL_URL_SCHEME = env("PORTAL_URL_SCHEME", default="http" if DEBUG else "https")
PORTAL_URL_PORT = env.int("PORTAL_URL_PORT", default=None)
PORTAL_TENANT_GRACE_DAYS = env.int("PORTAL_TENANT_GRACE_DAYS", default=30)
# The most one frame may take decoded when the archive renders it (thumbnails, rendered
# WADO); bigger frames are not decoded (a small compressed file can claim gigabytes).
PORTAL_MAX_DECODED_FRAME_BYTES = env.int("PORTAL_MAX_DECODED_FRAME_BYTES", default=256 << 20)
# The largest single DICOM file accepted by any ingest channel.
PORTAL_MAX_INSTANCE_BYTES = env.int("PORTAL_MAX_INSTANCE_BYTES", default=2 << 30)
# Refused files one tenant may keep in quarantine per 24 hours; past it, a refused file's
# row (reason, SHA-256) is kept but not its bytes, so senders cannot fill the shared disk.
PORTAL_QUARANTINE_BYTES_PER_DAY = env.int("PORTAL_QUARANTINE_BYTES_PER_DAY", default=1 << 30)
# An ingest job with pending items and no progress for this long lost its tasks (a killed
# worker, a broker restart): the singleton's ingest-recovery job sends them again.
PORTAL_INGEST_STALL_SECONDS = env.int("PORTAL_INGEST_STALL_SECONDS", default=60)
# Below this average instance size, a missing series thumbnail is made while the page loads.
PORTAL_INLINE_THUMBNAIL_BYTES = env.int("PORTAL_INLINE_THUMBNAIL_BYTES", default=4 << 20)
# How many items one tenant's periodic run may process; the next run continues (fairness).
PORTAL_JOB_BATCH_LIMIT = env.int("PORTAL_JOB_BATCH_LIMIT", default=1000)
# The most results one QIDO-RS search returns; clients page on with `offset`.
PORTAL_QIDO_MAX_RESULTS = env.int("PORTAL_QIDO_MAX_RESULTS", default=1000)
# The largest upload request or API body, and the largest expanded size of an uploaded zip.
PORTAL_MAX_UPLOAD_BYTES = env.int("PORTAL_MAX_UPLOAD_BYTES", default=20 << 30)
PORTAL_DEFAULT_QUOTA_BYTES = env.int("PORTAL_DEFAULT_QUOTA_BYTES", default=1 << 40)
PORTAL_DEFAULT_QUOTA_USERS = env.int("PORTAL_DEFAULT_QUOTA_USERS", default=50)
# The migrated schema every new tenant is cloned from (see tenants/provisioning.py).
PORTAL_TEMPLATE_SCHEMA = "tenant_template"

if PORTAL_TENANT_ROUTING not in {"subdomain", "path"}:
    raise ImproperlyConfigured("PORTAL_TENANT_ROUTING must be 'subdomain' or 'path'.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[PORTAL_BASE_DOMAIN, f".{PORTAL_BASE_DOMAIN}"])

if not DEBUG:
    # Production refuses to start on settings that would leak or forge sessions.
    if not SECRET_KEY or SECRET_KEY == _INSECURE_KEY or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured("SECRET_KEY must be set to a random value of 32+ characters.")
    if "*" in ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must not contain '*' in production.")

SHARED_APPS = [
    "django_tenants",
    "tenants",
    "accounts",
    "audit",
    "jobs",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_htmx",
    "csp",
    "drf_spectacular_sidecar",
    "corsheaders",
    "portal",
    "dicomnet",
]
# Users, sessions, login attempts, second factors and the audit log exist once per schema:
# the platform's in `public`, each tenant's in its own.
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "accounts",
    "audit",
    "jobs",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "configuration",
    "studies",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
AUTH_USER_MODEL = "accounts.User"
PUBLIC_SCHEMA_URLCONF = "portal.urls_public"
ROOT_URLCONF = "portal.urls_tenants"
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
TENANT_MIGRATION_EXECUTOR = env("TENANT_MIGRATION_EXECUTOR", default="standard")

MIDDLEWARE = [
    # First, before routing and host validation: a request id for every log line, then
    # /health/* and /metrics for load balancers and scrapers with any Host header.
    "portal.logs.RequestIdMiddleware",
    "portal.health.HealthMiddleware",
    "portal.metrics.MetricsMiddleware",
    "portal.nul.RefuseNulMiddleware",
    "portal.staticfiles.StaticFilesMiddleware",
    "portal.routing.TenantRoutingMiddleware",
    # After routing (the tenant's origins, prefix stripped), before anything that answers.
    "portal.cors.TenantCorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "portal.routing.TenantSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.routing.SessionTenantGuardMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.AdminSecondFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# CORS only for DICOMweb, only for the origins the active tenant lists (portal/cors.py asks
# its settings through django-cors-headers' signal). `path_info` is matched after routing,
# so `/t/<slug>/dicom-web/` (path mode) and proxy prefixes arrive here as `/dicom-web/`.
CORS_URLS_REGEX = r"^/dicom-web/"
CORS_ALLOWED_ORIGINS: list[str] = []
CORS_ALLOW_ALL_ORIGINS = False
# Viewers send an API token; without Allow-Credentials no other origin can use the session.
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_METHODS = ["GET", "POST", "OPTIONS"]
CORS_ALLOW_HEADERS = ["accept", "authorization", "content-type"]
CORS_EXPOSE_HEADERS = ["Content-Type", "Content-Length", "Content-Location", "Warning"]
CORS_PREFLIGHT_MAX_AGE = 600

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses logins while locked out
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling: attempts are stored in the schema of the site being attacked, so each
# tenant (and the platform) counts its own; a lockout holds a username from one address.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.views.locked_out"
AXES_CLIENT_IP_CALLABLE = "portal.routing.client_address"
AXES_VERBOSE = False
# Super-admins must set up a second factor before using the platform site (on unless DEBUG).
PORTAL_SUPERADMIN_2FA = env.bool("PORTAL_SUPERADMIN_2FA", default=not DEBUG)
# API tokens created without an expiry date expire after this many days (0: they never do).
PORTAL_TOKEN_DEFAULT_DAYS = env.int("PORTAL_TOKEN_DEFAULT_DAYS", default=365)
OTP_TOTP_ISSUER = env("OTP_TOTP_ISSUER", default="PACS portal")

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
                "csp.context_processors.nonce",
                "portal.context_processors.portal",
                "configuration.context_processors.branding",
            ],
            # `|size` and the usage bars on every page without a {% load %}.
            "builtins": ["portal.templatetags.portal_format"],
        },
    },
]

WSGI_APPLICATION = "portal.wsgi.application"

if not env("DATABASE_URL", default=""):
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. `make run` and `make test` start an embedded PostgreSQL "
        "for you; otherwise point DATABASE_URL at a PostgreSQL server."
    )
DATABASES = {"default": env.db("DATABASE_URL")}
# The role that owns the tables: migrations and tenant import connect as it, the processes
# as DATABASE_URL's role, which owns nothing (portal/dbroles.py). Same database; only the
# credentials (and host) are taken from it. Unset: one role does both.
PORTAL_DATABASE_OWNER = (
    env.db_url_config(env("DATABASE_OWNER_URL")) if env("DATABASE_OWNER_URL", default="") else None
)
# Who the processes log in as, kept apart: a migration swaps the connection's credentials.
PORTAL_DATABASE_APP_ROLE = {key: DATABASES["default"].get(key, "") for key in ("USER", "PASSWORD")}
# django-tenants' backend, counting the schemas each connection entered (portal/db/base.py).
DATABASES["default"]["ENGINE"] = "portal.db"
# `SET search_path` once per schema switch, not before every query (ingest runs dozens of
# statements per batch). Safe with django-tenants >= 4.0.1, which forgets the cached path
# on rollback, savepoint rollback and close (tests/portal/test_search_path.py proves it).
TENANT_LIMIT_SET_CALLS = True
# A connection that entered more tenant schemas than this is closed after its request, task
# or association (portal/dbbudget.py): PostgreSQL caches every relation a backend touched.
PORTAL_DB_SCHEMAS_PER_CONNECTION = env.int("PORTAL_DB_SCHEMAS_PER_CONNECTION", default=100)
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
# Connecting gives up after 10 s (libpq's connect_timeout; DATABASE_URL's ?connect_timeout= wins).
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
# A kept connection is checked before a request reuses it, so a restarted database costs one
# reconnect instead of a failed request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "portal",
        # Every key carries the active schema: a tenant never reads another's entries.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=3 * 24 * 3600)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_NAME = "portal_session"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=12 * 3600)
# The CSRF secret lives in the session, so it is scoped to the tenant like the session is.
CSRF_USE_SESSIONS = True
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
USE_X_FORWARDED_HOST = False
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
# In path-routing mode every tenant's pages share one browser origin, so a script injected into
# one tenant's page could read another's. Pages may run only this origin's script files (no
# inline script, no eval), styles only from files or a per-response nonce, and no page may be
# framed or submit a form elsewhere. Subdomain mode adds isolation by origin on top.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.SELF],
        "script-src": [csp.SELF],
        "style-src": [csp.SELF, csp.NONCE],
        "img-src": [csp.SELF, "data:", "blob:"],
        "connect-src": [csp.SELF],
        "object-src": [csp.NONE],
        "base-uri": [csp.NONE],
        "frame-ancestors": [csp.NONE],
        "form-action": [csp.SELF],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / ".var" / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_BACKEND = env(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default=f"pacs@{PORTAL_BASE_DOMAIN}")
# The SMTP relay of the SMTP backend (Django's defaults: localhost:25, no login, no TLS).
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "portal.api.BoundedLimitOffsetPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PACS portal API",
    "DESCRIPTION": "Super-admin and tenant REST API of the multitenant PACS portal.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed package, not a CDN: nothing is loaded from the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_ACKS_LATE = True
# A SIGKILLed worker's task goes back to the queue instead of being acknowledged.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
# Unacknowledged tasks come back after this long; it must exceed the longest task.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=2 * 3600)
}
CELERY_TASK_TENANT_CACHE_SECONDS = 30
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / ".var" / "celerybeat-schedule")

# Celery workers keep this logging setup (JSON lines with the task's id and tenant).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The heartbeat task lives beside the readiness check that reads it.
CELERY_IMPORTS = ["portal.health"]

# `json`: one object per line with tenant and request id (production); `plain` for people.
LOG_FORMAT = env("LOG_FORMAT", default="plain" if DEBUG else "json")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured("LOG_FORMAT must be 'json' or 'plain'.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "portal.logs.ContextFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s [%(tenant)s %(request_id)s] %(name)s %(message)s"
        },
        "json": {"()": "portal.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Health and metrics (portal/health.py, portal/metrics.py).
PORTAL_HEALTH_TIMEOUT = env.float("PORTAL_HEALTH_TIMEOUT", default=2.0)
# /health/ready fails when the singleton's heartbeat is older than this; 0 skips the check.
PORTAL_HEARTBEAT_MAX_AGE = env.int("PORTAL_HEARTBEAT_MAX_AGE", default=300)
PORTAL_METRICS_TOKEN = env("PORTAL_METRICS_TOKEN", default="")
PORTAL_METRICS_ALLOWED_NETWORKS = env.list(
    "PORTAL_METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"]
)
try:
    for _network in PORTAL_METRICS_ALLOWED_NETWORKS:
        ipaddress.ip_network(_network, strict=False)
except ValueError as _error:
    raise ImproperlyConfigured(f"PORTAL_METRICS_ALLOWED_NETWORKS: {_error}") from None

# Optional override of how tenant URLs are written, e.g. "https://pacs.example.org/{slug}"
# behind a proxy that maps URL contexts to the X-Tenant header.
PORTAL_TENANT_URL_TEMPLATE = env("PORTAL_TENANT_URL_TEMPLATE", default="")
# Queues: periodic jobs apart from ingest, so housekeeping never delays images arriving.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_PERIODIC_QUEUE = "periodic"
