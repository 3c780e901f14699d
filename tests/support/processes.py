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
