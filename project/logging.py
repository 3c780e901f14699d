"""Structured logging for Django and Celery through structlog.

Standard-library records (Django, Celery, kombu) and structlog events go through one
``ProcessorFormatter``: JSON lines when stderr is not a terminal (containers, CI, files),
readable coloured lines when it is. ``LOG_FORMAT`` forces one or the other.
"""

import sys

import structlog

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.ExtraAdder(),
]


def _renderer(fmt: str):
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer()


def build_logging(*, level: str, fmt: str) -> dict:
    """Configure structlog and return the ``LOGGING`` dict Django applies at setup."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _SHARED,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _renderer(fmt),
                ],
            },
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "structlog"},
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            "celery": {"level": level},
            "kombu": {"level": "WARNING"},
            # Apprise's own lines can echo a notification URL (and its secret): never printed;
            # monitoring.alerts logs each failure by the URL's scheme.
            "apprise": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
    }
