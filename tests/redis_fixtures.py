"""A real ``redis-server`` for the tests: started on a free loopback port in a tmp dir, with no
persistence (``--save "" --appendonly no``) or, for ``persistent_redis_server``, an append-only
file in that dir fsynced on every write (``--appendonly yes --appendfsync always``); stopped, paused
and started again on the same port by the tests that need Redis down, slow or restarted. Tests that
use it skip, saying why, without the binary."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from service_fixtures import free_port

REDIS_SERVER = shutil.which("redis-server")
ABSENT = "redis-server absent (Debian: apt-get install redis-server)"


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1:``port``; ``persistent``: with its append-only
    file in ``folder``, so that a restart reads back what the server held."""

    def __init__(self, folder: Path, persistent: bool = False):
        self.folder, self.port, self.persistent = folder, free_port(), persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--dir", str(self.folder), "--appendonly"]
            + (["yes", "--appendfsync", "always"] if self.persistent else ["no"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        """Kill the server (SIGKILL): without persistence what it held is gone; with it, what
        was written comes back at the next ``start``."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
            self.process = None

    @contextlib.contextmanager
    def paused(self):
        """The server stopped with SIGSTOP: connections open, no answers (a slow Redis)."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip(ABSENT)
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def persistent_redis_server(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip(ABSENT)
    server = RedisServer(tmp_path, persistent=True)
    yield server
    server.stop()
