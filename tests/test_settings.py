"""Settings come from the environment and reject bad values with a clear ImproperlyConfigured."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.CELERY_VISIBILITY_TIMEOUT)"
)


def run(code, tmp_path, **env):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DJANGO_", "CELERY_", "DATABASE_URL"))}
    clean.update({"DJANGO_SETTINGS_MODULE": "project.settings", "VAR_DIR": str(tmp_path),
                  "DJANGO_ENV_FILE": "", **env})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean,
                          capture_output=True, text=True)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe' is not a boolean"),
        ({"DJANGO_DEBUG": "0"}, "DJANGO_SECRET_KEY is required"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "only postgres:// and sqlite:// are supported"),
        ({"DATABASE_URL": "nonsense"}, "DATABASE_URL is not a valid database URL"),
        ({"CELERY_BROKER_URL": "amqp://guest@localhost//"}, "must be a redis://"),
        ({"CELERY_TASK_SOFT_TIME_LIMIT": "60", "CELERY_TASK_TIME_LIMIT": "60"},
         "must be greater than CELERY_TASK_SOFT_TIME_LIMIT"),
        ({"CELERY_TASK_TIME_LIMIT": "ten"}, "CELERY_TASK_TIME_LIMIT='ten' is not an integer"),
        ({"CELERY_VISIBILITY_TIMEOUT": "100"}, "must be longer than CELERY_TASK_TIME_LIMIT"),
        ({"SCHEDULING_BATCH_SIZE": "0"}, "SCHEDULING_BATCH_SIZE=0 must be at least 1"),
        ({"SCHEDULING_BATCH_SIZE": "100", "SCHEDULING_BATCH_MAX": "10"},
         "SCHEDULING_BATCH_MAX (10) must be at least SCHEDULING_BATCH_SIZE (100)"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not one of"),
    ],
)
def test_bad_values_stop_start_up_with_a_clear_reason(env, message, tmp_path):
    done = run(PROBE, tmp_path, **{"DJANGO_DEBUG": "1", **env})
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert message in done.stderr


def test_embedded_default_needs_no_server(tmp_path):
    done = run(PROBE, tmp_path, DJANGO_DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["django.db.backends.sqlite3", "filesystem://", "3600"]


def test_urls_select_postgres_and_redis(tmp_path):
    done = run(PROBE, tmp_path, DJANGO_DEBUG="1", DATABASE_URL="postgres://u@db:5432/billing",
               CELERY_BROKER_URL="redis://cache:6379/0")
    assert done.stdout.split() == [
        "django.db.backends.postgresql", "redis://cache:6379/0", "3600"
    ]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://cache:6379/0", "project.broker.Transport redis://:**@cache:6379/0 False"),
        # rediss: TLS, and the server's certificate is verified
        ("rediss://cache:6380/0", "project.broker.Transport rediss://:**@cache:6380/0 "
                                  "{'ssl_cert_reqs': <VerifyMode.CERT_REQUIRED: 2>}"),
        ("filesystem://",
         "kombu.transport.filesystem.Transport filesystem://:**@localhost// False"),
    ],
)
def test_redis_brokers_use_the_fixed_transport(url, expected, tmp_path):
    code = (
        "from project.celery import app; c = app.connection_for_write(); t = type(c.transport); "
        "print(f'{t.__module__}.{t.__name__}', c.as_uri(), c.ssl)"
    )
    done = run(code, tmp_path, DJANGO_DEBUG="1", CELERY_BROKER_URL=url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_celery_is_json_only_with_late_acks_and_limits(tmp_path):
    code = (
        "from project.celery import app; c = app.conf; "
        "print(c.task_serializer, c.result_serializer, c.accept_content, c.result_accept_content, "
        "c.worker_prefetch_multiplier, c.task_soft_time_limit, c.task_time_limit, "
        "c.beat_scheduler, c.beat_schedule, c.result_extended, c.result_backend)"
    )
    done = run(code, tmp_path, DJANGO_DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "json json ['json'] ['json'] 1 300 360 "
        "scheduling.beat:LeasedScheduler {} True project.results:ResultBackend"
    )


def test_check_deploy_is_clean_for_production_settings(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        | {"DJANGO_DEBUG": "0", "DJANGO_ALLOWED_HOSTS": "billing.example.com",
           "DJANGO_SECRET_KEY": "k" * 20 + "Q7!xZ2@pL9#mN4$vB8%cR1^tY6&uW3*sE5(dF0)gH",
           "VAR_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["manage.py", "check"],
        ["manage.py", "check_scheduler_liveness"],
        ["-m", "celery", "-A", "project", "worker", "--pool", "solo"],
        ["-m", "celery", "-A", "project", "beat"],
        ["-c", "import project.wsgi"],
    ],
    ids=["manage-check", "manage-liveness", "celery-worker", "celery-beat", "wsgi"],
)
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "0"}, "error: DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off"),
        ({"DJANGO_DEBUG": "1", "DATABASE_URL": "mysql://u@h/db"},
         "error: DATABASE_URL selects"),
    ],
    ids=["no-secret-key", "bad-database-url"],
)
def test_every_entry_point_reports_a_configuration_error_in_one_line(argv, env, message,
                                                                      tmp_path):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DJANGO_", "CELERY_", "DATABASE_URL"))}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          env=clean | {"VAR_DIR": str(tmp_path), "DJANGO_ENV_FILE": "", **env},
                          timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_local_env_file_is_read_and_real_variables_win(tmp_path):
    env_file = tmp_path / "local.env"
    env_file.write_text("# comments and blank lines are fine\n\nDJANGO_DEBUG=1\n"
                        "SCHEDULING_BEAT_TICK=7\nSCHEDULING_CATCH_UP_WINDOW=99\n")
    done = run("import django; django.setup(); from django.conf import settings as s; "
               "print(s.DEBUG, s.SCHEDULING_BEAT_TICK, s.SCHEDULING_CATCH_UP_WINDOW, s.ENV_FILE)",
               tmp_path, DJANGO_ENV_FILE=str(env_file), SCHEDULING_CATCH_UP_WINDOW="5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "7", "5", str(env_file)]


def test_a_named_env_file_that_does_not_exist_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DJANGO_ENV_FILE": str(tmp_path / "missing.env")}, timeout=60)
    assert done.returncode == 3
    missing = str(tmp_path / "missing.env")
    assert done.stderr.strip() == f"error: DJANGO_ENV_FILE={missing!r} is not a readable file."


def test_make_run_writes_a_local_env_file_with_the_local_defaults(tmp_path):
    """`make .env` (the first step of `make run`), then a plain shell's manage.py reads it: debug
    on and the embedded database, with no variable set by hand."""
    for name in ("Makefile", ".env.example"):
        shutil.copy(ROOT / name, tmp_path)
    made = subprocess.run(["make", "--no-print-directory", ".env"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert "created .env from .env.example" in made.stdout
    assert subprocess.run(["make", "-q", ".env"], cwd=tmp_path).returncode == 0  # made once
    set_lines = [line for line in (tmp_path / ".env").read_text().splitlines()
                 if line and not line.startswith("#")]
    assert set_lines == ["DJANGO_DEBUG=1", "LOG_FORMAT=console"]
    done = run("import django; django.setup(); from django.conf import settings as s; "
               "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL[:13])",
               tmp_path, DJANGO_ENV_FILE=str(tmp_path / ".env"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "django.db.backends.sqlite3", "filesystem://"]
