"""A real Celery worker process against the test database, for the worker integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
from django.db import connection

from config.celery import app as celery_app

BASE_DIR = Path(__file__).resolve().parent.parent
START_SECONDS = 30


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], hostname: str, log: Path) -> None:
        self.process = process
        self.hostname = hostname
        self.log = log

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def executed(self, task: str) -> int:
        """How many `task` messages this worker has run since it started."""
        stats = celery_app.control.inspect(destination=[self.hostname], timeout=5).stats() or {}
        assert self.hostname in stats, f"worker did not answer inspect; log:\n{self.log_tail()}"
        return int(stats[self.hostname].get("total", {}).get(task, 0))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def database_url_for_test_db() -> str:
    """DATABASE_URL with the database name swapped for the test database pytest-django made."""
    url = urlparse(os.environ["DATABASE_URL"])
    return urlunparse(url._replace(path="/" + connection.settings_dict["NAME"]))


def start_worker(*, log: Path, pool: str, name: str, env: dict[str, str] | None = None) -> Worker:
    """Start `celery worker` (one process or one child) on the test database and wait until it
    answers a ping."""
    if not os.environ.get("REDIS_URL"):
        pytest.fail("the Celery worker tests need REDIS_URL (scripts/test-services.sh sets it)")
    hostname = f"{name}-{uuid.uuid4().hex[:8]}@localhost"
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url_for_test_db(),
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DB_CONN_MAX_AGE": "0",
        **(env or {}),
    }
    command = [str(Path(sys.executable).with_name("celery")), "-A", "config", "worker", "--pool", pool]
    command += ["--concurrency", "1", "-l", "info", "-n", hostname, "--without-gossip", "--without-mingle"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(process, hostname, log)
    deadline = time.monotonic() + START_SECONDS
    while not celery_app.control.ping(destination=[hostname], timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            pytest.fail(f"the Celery worker did not come up; log:\n{worker.log_tail()}")
    return worker
