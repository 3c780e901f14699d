"""Read settings from the environment (and a local ``.env`` file), rejecting bad values loudly.

Every helper raises ``ImproperlyConfigured`` naming the variable and what it expected, so a
typo in a deployment fails at start-up with one clear line instead of running half-configured.
"""

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import dotenv
from django.core.exceptions import ImproperlyConfigured

#: Exit status of a process stopped by a configuration error (gunicorn's "worker failed to boot"
#: status, so its arbiter stops instead of restarting the worker in a loop).
CONFIG_EXIT = 3

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def load_env_file(base_dir: Path) -> Path | None:
    """Read ``DJANGO_ENV_FILE`` (default: ``.env`` at the project root, if present) into the
    environment; variables already set win. An empty ``DJANGO_ENV_FILE`` reads nothing (the test
    suite sets it so a developer's ``.env`` never leaks in). Returns the file read, if any."""
    named = os.environ.get("DJANGO_ENV_FILE")
    if named == "":
        return None
    path = Path(named) if named else base_dir / ".env"
    if not path.is_file():
        if named:
            raise ImproperlyConfigured(f"DJANGO_ENV_FILE={named!r} is not a readable file.")
        return None
    dotenv.load_dotenv(path, override=False)
    return path


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = env_str(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not one of: {', '.join(sorted(choices))}."
        )
    return value


@contextmanager
def configuration_errors_exit():
    """A configuration error (``ImproperlyConfigured``, raised by the settings with the variable
    and what it expected) stops the process with that one line on stderr and exit status
    ``CONFIG_EXIT``, not a traceback. Used by ``manage.py``, the Celery app and the WSGI entry."""
    try:
        yield
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(CONFIG_EXIT) from None
