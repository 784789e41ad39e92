"""gunicorn for the bench (started, watched and stopped by pid) and a minimal HTTP client."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PORTS = range(8700, 8800)


def free_port() -> int:
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} on {HOST}")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int, method: str, path: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """One request on a new connection (gunicorn's sync workers close each one anyway)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        answer = conn.getresponse()
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
    finally:
        conn.close()


class Gunicorn:
    """`gunicorn config.wsgi` on 127.0.0.1 with the bench's environment; the context manager
    stops it (SIGTERM to the master we started, then SIGKILL to it if it lingers)."""

    def __init__(self, *, env: Mapping[str, str], workers: int, log: Path) -> None:
        self.port = free_port()
        self.workers = workers
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gunicorn:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"{HOST}:{self.port}",
            "--workers",
            str(self.workers),
            "--timeout",
            "300",
            "--no-control-socket",
            "--log-level",
            "warning",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log}")
            try:
                if request(self.port, "GET", "/healthz").status == 200 and len(self.worker_pids()) == self.workers:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not become healthy in 60 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        return [int(child) for child in children]

    def rss_mib(self, field: str = "VmHWM") -> float:
        """The largest `field` (VmHWM: peak RSS; VmRSS: now) over the workers, in MiB."""
        peak = 0.0
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        return peak
