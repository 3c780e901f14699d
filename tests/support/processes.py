"""Start and stop real ``celery worker`` / ``celery beat`` processes for end-to-end tests."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


class Service:
    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Service":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        code, self.proc = self.proc.returncode, None
        return code

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return f"--- {self.name} log ({self.log_path}) ---\n" + "\n".join(text[-lines:])


def celery(*args: str, app: str = "project") -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, *args]


def worker(env: dict, log_dir: Path, hostname: str, app: str = "project",
           concurrency: int = 1, queues: str | None = None) -> Service:
    return Service(
        "worker",
        celery(
            "worker",
            *([f"--queues={queues}"] if queues else []),
            "-E",
            "--loglevel=INFO",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--hostname={hostname}",
            "--without-mingle",
            "--without-gossip",
            app=app,
        ),
        env,
        log_dir,
    )


def beat(env: dict, log_dir: Path, *args: str, name: str = "beat") -> Service:
    return Service(name, celery("beat", "--loglevel=INFO", *args), env, log_dir)


def wait_for_ping(env: dict, hostname: str, timeout: float = 60) -> str:
    """``celery inspect ping`` until the worker answers; returns what the command printed."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            celery("inspect", "ping", "--timeout=2", f"--destination={hostname}"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode == 0 and "pong" in done.stdout:
            return done.stdout
        if time.monotonic() > deadline:
            raise AssertionError(
                f"worker {hostname} never answered ping:\n{done.stdout}{done.stderr}"
            )
        time.sleep(0.5)


def eventually(probe, check, timeout: float, what: str, services=()):
    """Poll ``probe()`` until ``check(value)`` holds (observing other processes, so polling)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(s.log_tail() for s in services)
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last: {value}\n{logs}"
            )
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server on a free port with an append-only file, stoppable and restartable."""

    def __init__(self, folder: Path):
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (`.ci/run` installs it): this test "
                        "starts and stops a Redis of its own")
        self.port, self.folder, self.proc = free_port(), folder, None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly",
             "yes", "--appendfsync", "always", "--save", "", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(self.ping, bool, 10, "redis to answer")

    def ping(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (``initdb`` + ``pg_ctl`` as the ``postgres``
    user) on a free port, stoppable and restartable: never the machine's shared server."""

    def __init__(self, name: str = "billing"):
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            pytest.skip("initdb / pg_ctl are not installed: this test starts and stops a "
                        "PostgreSQL cluster of its own")
        import tempfile

        self.port, self.name = free_port(), name
        # Outside pytest's tmp_path, which is private to root: the cluster runs as postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="own-pg-"))
        shutil.chown(self.folder, "postgres")
        self.data, self.log = self.folder / "data", self.folder / "server.log"
        self._as_postgres("initdb", "--auth=trust", "--username=postgres", "--no-sync",
                          "--encoding=UTF8", "-D", str(self.data))

    def _as_postgres(self, *argv: str, check: bool = True):
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=check,
                              capture_output=True, text=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.name}"

    def start(self):
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off", "start")
        if not self._as_postgres("psql", "-h", "127.0.0.1", "-p", str(self.port), "-tAc",
                                 f"SELECT 1 FROM pg_database WHERE datname = '{self.name}'",
                                 "postgres").stdout.strip():
            self._as_postgres("createdb", "-h", "127.0.0.1", "-p", str(self.port), self.name)

    def stop(self, mode: str = "fast"):
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop",
                          check=False)

    def remove(self):
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
