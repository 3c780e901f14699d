"""The compose file, proven without a Docker engine: its topology, its validity against the
Compose specification (Debian's docker-compose, `config`), and then every service's own command
and healthcheck run here against the local PostgreSQL and Redis until scheduled jobs are
dispatched and executed. If a command in the file is wrong, this fails."""

import http.client
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.db import connection

from scheduling.beat import Dispatch
from tests.support.processes import ROOT, Service, eventually, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
COMPOSE = ROOT / "docker-compose.yml"
LONG_RUNNING = ("postgres", "redis", "web", "worker", "beat", "flower")


def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(command)


def test_topology():
    services = raw()["services"]
    beats = [name for name, s in services.items() if re.search(r"\bbeat\b", command_text(s))
             and "celery" in command_text(s)]
    assert beats == ["beat"], beats
    for name, service in services.items():
        text = command_text(service)
        if "worker" in text:
            assert not re.search(r"(\s-B\b|--beat\b)", text), f"{name} embeds a beat"
    assert "deploy" not in services["beat"] or services["beat"]["deploy"].get("replicas", 1) == 1
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # so --scale works
    assert "-E" in command_text(worker)
    grace = int(str(worker["stop_grace_period"]).rstrip("s"))
    assert grace > settings.CELERY_TASK_TIME_LIMIT
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert "check_scheduler_liveness" in " ".join(services["beat"]["healthcheck"]["test"])
    assert "/health/live" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat", "flower"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["postgres"]["condition"] == "service_healthy", name
        assert needs["redis"]["condition"] == "service_healthy", name
    assert services["flower"]["profiles"] == ["monitoring"]
    assert "--basic-auth" in command_text(services["flower"])
    assert "--appendonly" in command_text(services["redis"])
    assert any("postgres-data" in v for v in services["postgres"]["volumes"])


def resolved(tmp_path: Path, env: dict) -> dict:
    """``docker-compose config`` on a copy of the file with .env made from .env.example: checks
    the file against the Compose specification and gives every command with variables filled."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (`.ci/run` installs Debian's package)")
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    done = subprocess.run([tool, "-f", str(tmp_path / "docker-compose.yml"), "--profile",
                           "monitoring", "config"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def compose_env() -> dict:
    s = connection.settings_dict
    broker = settings.CELERY_BROKER_URL  # redis://host:port/db
    host, port, db = re.match(r"redis://([^:/]+):(\d+)/(\d+)", broker).groups()
    return {
        **os.environ,
        "POSTGRES_HOST": s["HOST"] or "127.0.0.1", "POSTGRES_PORT": str(s["PORT"] or 5432),
        "POSTGRES_USER": s["USER"], "POSTGRES_PASSWORD": s["PASSWORD"] or "unused",
        "POSTGRES_DB": s["NAME"],
        "REDIS_HOST": host, "REDIS_PORT": port, "REDIS_DB": db,
        "DJANGO_SECRET_KEY": "compose-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "FLOWER_PASSWORD": "flower-test", "WEB_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
    }


def service_env(service: dict, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",
                                                            "CELERY_BROKER_URL")}
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    # Paths inside the image: here they live in the test's own folder.
    env.update(DJANGO_STATIC_ROOT=str(tmp_path / "static"), VAR_DIR=str(tmp_path / "var"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # python, celery, gunicorn
    return env


def unescape(argv):
    """``config`` keeps ``$$`` (a literal ``$`` in compose); the container sees ``$``."""
    return [part.replace("$$", "$") for part in argv]


def healthcheck(service: dict, env: dict) -> subprocess.CompletedProcess:
    test = unescape(service["healthcheck"]["test"])
    argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def fetch(port: int, path: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        # gunicorn runs with production settings: HTTPS is assumed behind a proxy.
        connection.request("GET", path, headers={"Host": "localhost",
                                                 "X-Forwarded-Proto": "https"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def test_every_service_runs_its_own_command_passes_its_healthcheck_and_jobs_run(tmp_path):
    env_in = compose_env()
    config = resolved(tmp_path, env_in)
    services = config["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "beat", "flower"}

    migrate = services["migrate"]
    done = subprocess.run(unescape(migrate["command"]), cwd=ROOT,
                          env=service_env(migrate, tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kept" in done.stdout or "created" in done.stdout  # seed_schedules ran

    # The image's build step (Dockerfile: collectstatic with build-time settings only).
    build = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT,
        env=service_env(services["web"], tmp_path) | {"DJANGO_SECRET_KEY": "build-only"},
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr

    started = {}
    try:
        for name in ("web", "worker", "beat", "flower"):
            env = service_env(services[name], tmp_path)
            argv = unescape(services[name]["command"])
            started[name] = (Service(name, argv, env, tmp_path).start(),
                             env)
        for name, (service, env) in started.items():
            eventually(lambda s=services[name], e=env: healthcheck(s, e).returncode,
                       lambda code: code == 0, 90, f"{name}'s own healthcheck to pass",
                       [service])
        # The web command serves a styled admin: every stylesheet its login page links.
        port = int(env_in["WEB_PORT"])
        status, _, login = fetch(port, "/admin/login/")
        assert status == 200, login[:2000]
        links = re.findall(r'<link rel="stylesheet" href="([^"]+)"', login)
        assert any("/static/admin/css/base." in link for link in links), links
        for link in links:
            status, content_type, _ = fetch(port, link)
            assert (status, content_type.split(";")[0]) == (200, "text/css"), link
        # The scheduled jobs are dispatched by that beat and executed by that worker.
        eventually(
            lambda: list(Dispatch.objects.filter(kind="scheduled", state="succeeded")
                         .values_list("task_name", flat=True)),
            lambda names: "scheduling.expire_coupons" in names
            and "monitoring.evaluate_alerts" in names,
            120, "scheduled jobs to run", [s for s, _ in started.values()],
        )
    finally:
        codes = {name: service.stop() for name, (service, _) in started.items()}
    assert all(code in (0, None) for code in codes.values()), codes


def test_dockerfile_one_image_from_the_lock_file_non_root_static_collected():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.M)
    assert len(stages) == 2, stages  # build, runtime
    assert "uv sync --frozen --no-dev" in text
    assert "collectstatic --noinput" in text
    assert re.search(r"^USER app$", text, flags=re.M)
    assert "PYTHONUNBUFFERED=1" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)
