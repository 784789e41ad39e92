"""A production-style deployment on this machine for the end-to-end suite: a MariaDB database of
its own (`e2e_<random>`, migrated with `manage.py migrate`), gunicorn app servers, a Celery worker
on Redis (not eager), and helpers that run Django code against that database in subprocesses
(the test process itself never touches it through the ORM)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import MySQLdb

BASE_DIR = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
PORT_RANGE = range(8600, 8700)


def free_ports(count: int, *, avoid: Collection[int] = ()) -> list[int]:
    """Ports in 8600-8699 that nothing listens on now, in random order: two runs on one machine
    (another `make test`, another engineer's e2e) then rarely reach for the same port. Free now
    does not mean free later; `Stack.start_app` checks that its own server got the port."""
    found = []
    for port in random.sample(PORT_RANGE, len(PORT_RANGE)):
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError("no free ports in 8600-8699")


def wait_until(condition: Any, *, seconds: float, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child in its own session, so kill -9 takes it with all its children (gunicorn's and
    Celery's workers), as a crashed machine would."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            out.write(f"\n=== start {name}: {' '.join(command)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Stack:
    def __init__(self, tmp: Path, *, database_url: str, redis_url: str) -> None:
        self.tmp = tmp
        server = urlparse(database_url)
        self.db_name = f"e2e_{uuid.uuid4().hex[:10]}"
        self.db_params = {
            "host": server.hostname or "127.0.0.1",
            "port": server.port or 3306,
            "user": server.username or "root",
            "passwd": server.password or "",
        }
        self.database_url = urlunparse(server._replace(path="/" + self.db_name))
        self.redis_url = redis_url
        (tmp / "var" / "static").mkdir(parents=True, exist_ok=True)  # WhiteNoise warns without it
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": redis_url,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "SECRET_KEY": "e2e-only-secret-key",
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "FIELDSYNC_VAR_DIR": str(tmp / "var"),
            "MEDIA_ROOT": str(tmp / "media"),
            # One staging directory for both app servers: a tus upload's chunks land on either.
            "ATTACHMENT_STAGING_DIR": str(tmp / "staging"),
            # A PATCH cut by the network holds its lease this long; short, or resumes wait a minute.
            "ATTACHMENT_PATCH_LEASE": "5",
            # A killed worker's message comes back after the visibility timeout: keep it short.
            "CELERY_TASK_SOFT_TIME_LIMIT": "8",
            "CELERY_TASK_TIME_LIMIT": "10",
            "CELERY_VISIBILITY_TIMEOUT": "12",
            # The sweeper re-enqueues a verification whose message was lost after this long.
            "ATTACHMENT_ENQUEUE_GRACE": "5",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        self.apps: dict[int, Process] = {}
        self.app_ports: list[int] = []
        self.worker: Process | None = None
        self.beat: Process | None = None
        self.worker_hostnames: list[str] = []

    # --- database -----------------------------------------------------------------------------

    def connect(self, database: str | None = None) -> Any:
        return MySQLdb.connect(**self.db_params, db=database or "", connect_timeout=5, autocommit=True)

    def create_database(self) -> None:
        with self.connect() as db:
            db.cursor().execute(f"CREATE DATABASE `{self.db_name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        self.manage("migrate", "--noinput", "-v0")
        self.manage("seed_demo")

    def drop_database(self) -> None:
        with self.connect() as db:
            db.cursor().execute(f"DROP DATABASE IF EXISTS `{self.db_name}`")

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect(self.db_name) as db:
            cursor = db.cursor()
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def manage(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def django(self, module: str, *args: str, timeout: float = 120) -> Any:
        """Run `python -m tests.e2e.<module>` on the e2e database; it prints JSON."""
        result = subprocess.run(
            [sys.executable, "-m", f"tests.e2e.{module}", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"tests.e2e.{module} failed:\n{result.stdout}\n{result.stderr}")
        return json.loads(result.stdout)

    # --- app servers --------------------------------------------------------------------------

    def start_app(self, index: int) -> None:
        """Start app server `index` on its port, or on a new one if another process took that
        port in the meantime (another run's server or proxy, e.g. in the second an app server
        the conductor killed is down): the proxy reads `app_ports`, the same list, so it follows."""
        for _ in range(5):
            if self._launch_app(index, self.app_ports[index]):
                return
            self.app_ports[index] = free_ports(1, avoid=self.app_ports)[0]
        raise RuntimeError(f"app server {index}: every port tried was taken")

    def _launch_app(self, index: int, port: int) -> bool:
        """True once this gunicorn listens on `port` and answers /healthz; False if the port was
        taken. /healthz is asked only after gunicorn's own "Listening at" line: on a taken port,
        the /healthz that answers is the other run's, and the devices' requests would go there."""
        log = self.tmp / f"app{index}.log"
        start = log.stat().st_size if log.exists() else 0
        app = self.apps[index] = Process(
            f"app{index}",
            [
                str(BIN / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--timeout",
                "30",
                "--graceful-timeout",
                "5",
                "--no-control-socket",
            ],
            env=self.env,
            log=log,
        )
        listening = f"Listening at: http://127.0.0.1:{port} ({app.pid})"

        def since_start() -> str:
            with log.open("rb") as text:
                text.seek(start)
                return text.read().decode(errors="replace")

        wait_until(
            lambda: listening in since_start() or "Connection in use" in since_start() or not app.alive(),
            seconds=30,
            what=f"app server {index} to bind port {port}",
        )
        if listening not in since_start():
            app.kill9()
            if "Connection in use" not in since_start():
                raise RuntimeError(f"app server {index} exited:\n{app.tail()}")
            return False
        wait_until(lambda: self._healthy(port), seconds=30, what=f"app server {index} on port {port}")
        return True

    def _healthy(self, port: int) -> bool:
        if not self.apps_alive_on(port):
            raise RuntimeError(f"app server on {port} exited:\n{self._app_on(port).tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _app_on(self, port: int) -> Process:
        return self.apps[self.app_ports.index(port)]

    def apps_alive_on(self, port: int) -> bool:
        return self._app_on(port).alive()

    def kill_app(self, index: int) -> None:
        self.apps[index].kill9()

    # --- the Celery worker --------------------------------------------------------------------

    def start_worker(self, *, storage_delay: float = 0) -> str:
        hostname = f"e2e-{uuid.uuid4().hex[:8]}@localhost"
        env = {
            **self.env,
            "DJANGO_SETTINGS_MODULE": "tests.e2e.worker_settings",
            "FIELDSYNC_TEST_STORAGE_DELAY": str(storage_delay),
            "DB_CONN_MAX_AGE": "0",
        }
        self.worker = Process(
            f"worker {hostname}",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "-l",
                "info",
                "-n",
                hostname,
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            log=self.tmp / "worker.log",
        )
        self.worker_hostnames.append(hostname)
        log = self.tmp / "worker.log"
        wait_until(
            lambda: f"{hostname} ready" in log.read_text(errors="replace") or not self._worker_alive(),
            seconds=60,
            what="the Celery worker",
        )
        if not self._worker_alive():
            raise RuntimeError(f"the Celery worker exited:\n{self.worker.tail()}")
        return hostname

    def start_beat(self) -> None:
        self.beat = Process(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "beat",
                "-l",
                "info",
                "--schedule",
                str(self.tmp / "var" / "celerybeat-schedule"),
            ],
            env={**self.env, "DJANGO_SETTINGS_MODULE": "tests.e2e.worker_settings"},
            log=self.tmp / "beat.log",
        )

    def _worker_alive(self) -> bool:
        return self.worker is not None and self.worker.alive()

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.kill9()

    # --- teardown -----------------------------------------------------------------------------

    def stop(self) -> None:
        for app in self.apps.values():
            app.stop()
        for process in (self.beat, self.worker):
            if process is not None:
                process.stop()
