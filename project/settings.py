"""Django settings, all from the environment (see ``.env.example`` for every variable); a ``.env``
file at the project root is read first if present (real environment variables win).

With neither ``DATABASE_URL`` nor ``CELERY_BROKER_URL`` set, the project runs on an embedded
default that needs no server: a SQLite file and kombu's filesystem broker under ``var/``.
"""

import ssl
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.env import env_bool, env_choice, env_int, env_list, env_str, load_env_file

BASE_DIR = Path(__file__).resolve().parent.parent
ENV_FILE = load_env_file(BASE_DIR)  # `make run` writes .env with the local defaults
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var").resolve()

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off (set DJANGO_DEBUG=1 locally)."
        )
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_celery_results",
    "scheduling",
    "deadletters",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS and JS) straight from gunicorn: no other server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

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
                # The admin's "no scheduler is running" / "jobs are red" banner.
                "monitoring.banner.scheduler_banner",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------
_database_url = env_str("DATABASE_URL")
if _database_url:
    try:
        _db = dj_database_url.parse(_database_url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
    except Exception as exc:  # dj-database-url raises several types for malformed URLs
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if _db["ENGINE"] not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL selects {_db['ENGINE']!r}; only postgres:// and sqlite:// are supported."
        )
    if _db["ENGINE"] == "django.db.backends.postgresql":
        _db["CONN_HEALTH_CHECKS"] = True
        # No JIT: the status query (one row per job, a dozen index-probe subqueries) is costed
        # past jit_above_cost and PostgreSQL then spends ~350 ms compiling it to run 20 ms
        # (measured at 1,000 jobs, bench/status.py). Short OLTP queries never gain from JIT.
        options = _db.setdefault("OPTIONS", {})
        options["options"] = f"{options.get('options', '')} -c jit=off".strip()
        # A database that is down refuses at once; one that is unreachable (a failover, a
        # network partition) must not hang a connect for the kernel's TCP timeout.
        options.setdefault("connect_timeout", 5)
else:
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "db.sqlite3")}

if _db["ENGINE"] == "django.db.backends.sqlite3":
    # The one piece of start-up I/O: SQLite cannot create the folder its file lives in, and
    # "unable to open database file" tells nobody that VAR_DIR is simply missing.
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Web, worker and beat share one file: WAL lets readers run beside the writer, IMMEDIATE
    # transactions take the write lock up front (no upgrade deadlocks), and the timeout waits
    # for the lock instead of failing with "database is locked".
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT") or VAR_DIR / "static")
# Production serves what `collectstatic` wrote (the image runs it at build time): hashed names
# (cached for a year by browsers) and gzip copies, served by WhiteNoise. In debug, `runserver`
# serves the app folders as they are.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
                    else "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Security (production defaults; `manage.py check --deploy` is clean with DEBUG off) ---------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", SECURE_HSTS_SECONDS > 0)
# Opting out of the preload list is a deliberate choice, not an oversight to warn about.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (opt in: trusting it blindly
# is unsafe).
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The health probes are plain HTTP from inside the cluster; never redirect them.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]  # probes and scrapers inside the network

# --- Celery ---------------------------------------------------------------------------------------
_broker_url = env_str("CELERY_BROKER_URL")
EMBEDDED_BROKER_DIR = VAR_DIR / "broker"
if _broker_url:
    if not _broker_url.startswith(("redis://", "rediss://", "filesystem://")):
        raise ImproperlyConfigured(
            "CELERY_BROKER_URL must be a redis://, rediss:// or filesystem:// URL."
        )
    CELERY_BROKER_URL = _broker_url
else:
    CELERY_BROKER_URL = "filesystem://"

CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360, minimum=1)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT}s) must be greater than "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT}s) so the soft limit can stop "
        "a job cleanly before the hard limit kills it."
    )
# With late acks, Redis redelivers any message not acknowledged within the visibility timeout.
# It must outlast the longest hard limit, or a long job still running is handed to a second worker.
CELERY_VISIBILITY_TIMEOUT = env_int(
    "CELERY_VISIBILITY_TIMEOUT", max(3600, CELERY_TASK_TIME_LIMIT * 2), minimum=1
)
if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT ({CELERY_VISIBILITY_TIMEOUT}s) must be longer than "
        f"CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT}s), or running jobs are delivered twice."
    )

if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(EMBEDDED_BROKER_DIR / "queue"),
        "data_folder_out": str(EMBEDDED_BROKER_DIR / "queue"),
        "control_folder": str(EMBEDDED_BROKER_DIR / "control"),
        "processed_folder": str(EMBEDDED_BROKER_DIR / "processed"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
    if CELERY_BROKER_URL.startswith("rediss://"):
        # TLS that verifies the server's certificate (kombu's default for rediss:// does not).
        CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}

CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# django-celery-results' database backend, made to wait out a PostgreSQL outage in workers
# (project/results.py): a run's state writes wait up to DB_OUTAGE_WAIT seconds for the database,
# then late-acknowledged runs are put back on their queue rather than lost.
CELERY_RESULT_BACKEND = "project.results:ResultBackend"
DB_OUTAGE_WAIT = env_int("DB_OUTAGE_WAIT", min(60, CELERY_TASK_SOFT_TIME_LIMIT // 4), minimum=0)
if DB_OUTAGE_WAIT >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"DB_OUTAGE_WAIT ({DB_OUTAGE_WAIT}s) must be shorter than CELERY_TASK_SOFT_TIME_LIMIT "
        f"({CELERY_TASK_SOFT_TIME_LIMIT}s): a run that waits for the database must still end "
        "within its time limits."
    )
# Extended results store task name, args and (for scheduled runs) the periodic task name.
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = env_int("CELERY_RESULT_EXPIRES_DAYS", 7, minimum=1) * 86400
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker takes a message only when a pool process is free (Redis only): none waits in a busy
# worker's memory, where a broker outage would strand it until the visibility timeout, and an
# idle worker gets the next job instead. The ETA messages a worker still holds (a retry's
# countdown) are given back to their queues after a reconnect (project/broker.py).
CELERY_WORKER_DISABLE_PREFETCH = env_bool("CELERY_WORKER_DISABLE_PREFETCH", True)
CELERY_WORKER_CONSUMER = "project.broker:Consumer"
# Workers keep their database connection across tasks (Celery's Django fixup otherwise closes
# it before and after every task, so DB_CONN_MAX_AGE did nothing in workers): reopened after
# this many tasks, after DB_CONN_MAX_AGE, after an error, or when the health check before a
# task finds it broken (project/celery.py). 0: Celery's default, a new connection per task.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 100, minimum=0) or None
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Our scheduler: a leader lease (one active beat), a dispatch ledger (each slot sent once), a
# heartbeat, and trigger-driven change detection. See scheduling/beat.py.
CELERY_BEAT_SCHEDULER = "scheduling.beat:LeasedScheduler"
# Schedules are data: defaults live in scheduling/schedules.py and are seeded into the database.
# Anything put here would be re-imposed over admin edits on every beat start.
CELERY_BEAT_SCHEDULE: dict = {}
DJANGO_CELERY_BEAT_TZ_AWARE = True

# --- The scheduler (beat) -------------------------------------------------------------------------
# A standby beat takes over this long after the leader last renewed its lease (at once when the
# leader stops cleanly). The leader renews on every tick, so the TTL must cover several ticks.
SCHEDULING_BEAT_LEASE_TTL = env_int("SCHEDULING_BEAT_LEASE_TTL", 30, minimum=2)
# Longest sleep between ticks, in seconds: bounds how late a schedule change or a takeover is seen.
SCHEDULING_BEAT_TICK = env_int("SCHEDULING_BEAT_TICK", 1, minimum=1)
if SCHEDULING_BEAT_LEASE_TTL < 2 * SCHEDULING_BEAT_TICK:
    raise ImproperlyConfigured(
        f"SCHEDULING_BEAT_LEASE_TTL ({SCHEDULING_BEAT_LEASE_TTL}s) must be at least twice "
        f"SCHEDULING_BEAT_TICK ({SCHEDULING_BEAT_TICK}s), or the leader loses its lease between "
        "ticks."
    )
# After beat was down, a missed slot younger than this runs once; older ones are recorded as
# missed. Per job in the admin (job policy); this is the default.
SCHEDULING_CATCH_UP_WINDOW = env_int("SCHEDULING_CATCH_UP_WINDOW", 3600, minimum=0)

# --- The jobs -------------------------------------------------------------------------------------
# Primary keys per batch transaction: the first batch's size; later batches adapt (doubling or
# halving) to take about SCHEDULING_BATCH_TARGET_MS each, never more than SCHEDULING_BATCH_MAX keys.
SCHEDULING_BATCH_SIZE = env_int("SCHEDULING_BATCH_SIZE", 2000, minimum=1)
SCHEDULING_BATCH_MAX = env_int("SCHEDULING_BATCH_MAX", 50_000, minimum=1)
SCHEDULING_BATCH_TARGET_MS = env_int("SCHEDULING_BATCH_TARGET_MS", 50, minimum=1)
if SCHEDULING_BATCH_MAX < SCHEDULING_BATCH_SIZE:
    raise ImproperlyConfigured(
        f"SCHEDULING_BATCH_MAX ({SCHEDULING_BATCH_MAX}) must be at least "
        f"SCHEDULING_BATCH_SIZE ({SCHEDULING_BATCH_SIZE})."
    )

# --- Dead letters ---------------------------------------------------------------------------------
# Resolved and ignored dead letters are deleted this many days after the decision; pending ones
# never are (deadletters.prune_dead_letters, seeded daily).
DEADLETTERS_RETENTION_DAYS = env_int("DEADLETTERS_RETENTION_DAYS", 30, minimum=1)
# A message delivered more than this many times without finishing (it keeps killing its worker
# process) is dead-lettered instead of being run again. Applies to acks_late tasks.
DEADLETTERS_MAX_DELIVERIES = env_int("DEADLETTERS_MAX_DELIVERIES", 3, minimum=1)
# Argument keys whose values are redacted before a dead letter is stored (matched ignoring case
# and separators, as substrings: "card_number" also covers "cardNumber" and "old_card_number").
DEADLETTERS_REDACT_KEYS = env_list(
    "DEADLETTERS_REDACT_KEYS", ["password", "token", "secret", "card_number", "cvv"]
)

# --- Monitoring and alerts ------------------------------------------------------------------------
# Per job defaults (editable beside each schedule in the admin): seconds a due run may take to be
# dispatched / started and leftover work may wait, and how many failed runs in a row are failing.
MONITORING_GRACE = env_int("MONITORING_GRACE", 120, minimum=1)
MONITORING_FAILURES = env_int("MONITORING_FAILURES", 1, minimum=1)
# Notify after this many bad evaluations in a row, and the recovery after this many good ones.
MONITORING_ALERT_AFTER = env_int("MONITORING_ALERT_AFTER", 2, minimum=1)
MONITORING_RECOVER_AFTER = env_int("MONITORING_RECOVER_AFTER", 2, minimum=1)
MONITORING_WEBHOOK_URL = env_str("MONITORING_WEBHOOK_URL", "")  # Slack-compatible JSON POST
# Apprise URLs, comma-separated (pagerduty://, opsgenie://, msteams://, slack://, discord://,
# tgram://, mailto://, json://, ...): every alert goes to each of them too. Checked by
# `manage.py check` (monitoring.E001); secrets in them are never logged.
MONITORING_NOTIFY_URLS = env_list("MONITORING_NOTIFY_URLS", [])
MONITORING_RUN_RETENTION_DAYS = env_int("MONITORING_RUN_RETENTION_DAYS", 30, minimum=1)
MONITORING_HEALTH_CACHE = env_int("MONITORING_HEALTH_CACHE", 5, minimum=0)
# How often every worker checks that a beat is alive, logging an ERROR while none is (0: never).
MONITORING_WATCHDOG_SECONDS = env_int("MONITORING_WATCHDOG_SECONDS", 60, minimum=0)
# Detail on the health endpoints and /metrics for requests with "Authorization: Bearer <token>".
HEALTH_TOKEN = env_str("HEALTH_TOKEN", "")
# Pinged by the leading beat every minute when set (an outside dead-man's switch).
SCHEDULING_DEADMAN_URL = env_str("SCHEDULING_DEADMAN_URL", "")
# How often the leading beat checks that a live worker consumes every queue it sends to (0: never).
SCHEDULING_CONSUMER_CHECK_SECONDS = env_int("SCHEDULING_CONSUMER_CHECK_SECONDS", 60, minimum=0)
# The worker registry: each worker refreshes its row this often; a worker gone without a clean
# stop counts as dead after SCHEDULING_WORKER_STALE seconds (its running jobs are then lost).
SCHEDULING_WORKER_HEARTBEAT = env_int("SCHEDULING_WORKER_HEARTBEAT", 10, minimum=1)
SCHEDULING_WORKER_STALE = env_int(
    "SCHEDULING_WORKER_STALE", 3 * SCHEDULING_WORKER_HEARTBEAT, minimum=1)
if SCHEDULING_WORKER_STALE <= SCHEDULING_WORKER_HEARTBEAT:
    raise ImproperlyConfigured(
        f"SCHEDULING_WORKER_STALE ({SCHEDULING_WORKER_STALE}s) must be longer than "
        f"SCHEDULING_WORKER_HEARTBEAT ({SCHEDULING_WORKER_HEARTBEAT}s)."
    )
# A run neither finished nor held by a live worker this long after the hard time limit is lost.
SCHEDULING_LOST_GRACE = env_int("SCHEDULING_LOST_GRACE", 60, minimum=1)
# Email alerts go to ADMINS (comma-separated addresses) through the SMTP server below.
ADMINS = [("", address) for address in env_list("DJANGO_ADMINS", [])]
SERVER_EMAIL = env_str("DJANGO_SERVER_EMAIL", "billing-scheduler@localhost")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_TIMEOUT = 10

# --- Logging (structlog for Django and Celery) ----------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "info", {"debug", "info", "warning", "error"}).upper()
LOG_FORMAT = env_choice("LOG_FORMAT", "auto", {"auto", "json", "console"})
from project.logging import build_logging  # noqa: E402

LOGGING = build_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)
