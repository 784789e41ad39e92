"""A small fault-injecting TCP proxy (asyncio, in a background thread) in front of the app servers.

It understands just enough HTTP/1.1 to pick its moment: it reads the request head, forwards the
request to the next app server (round robin; a refused connection fails over to the next, as a
load balancer would), then reads the whole response. Each connection carries one request (the
client sends `Connection: close`). Faults, each decided per request from a seeded random stream
(the first eligible request always gets it, so every fault happens in every run):

- `drop_response`: the response is read to the end, so the server has committed, and the client's
  connection is reset instead of getting it (push, pull, action results, tus create and PATCH);
- `reset_upload`: a tus PATCH is cut after part of its body: the server side gets a clean EOF
  (it keeps the bytes that arrived), the client a reset;
- `slow`: both directions are throttled to `slow_bytes_per_second`;
- `offline`: every connection is reset at once (no signal).

`watchers` are called (in the proxy's thread) when a request has been forwarded, so a test can
kill the app server that is handling it at that moment."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

Watcher = Callable[[int, str, bytes], None]  # (backend index, request kind, body of a push)

READ_TIMEOUT = 60.0
PIECE = 16 * 1024


@dataclass
class Faults:
    drop_response: float = 0.0
    reset_upload: float = 0.0
    slow: float = 0.0
    slow_bytes_per_second: int = 256 * 1024


def kind_of(method: str, path: str) -> str:
    path = path.split("?", 1)[0]
    if method == "POST" and path == "/api/v1/sync/push":
        return "push"
    if method == "GET" and path == "/api/v1/sync/pull":
        return "pull"
    if method == "GET" and path.startswith("/api/v1/sync/actions/"):
        return "action"
    if method == "POST" and path == "/api/v1/uploads/":
        return "upload_create"
    if method == "PATCH" and path.startswith("/api/v1/uploads/"):
        return "upload_patch"
    return "other"


DROPPABLE = {"push", "pull", "action", "upload_create", "upload_patch"}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a dropped mobile connection looks to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, *, port: int, backends: list[int], seed: int) -> None:
        self.port = port
        self.backends = backends
        self.faults = Faults()
        self.offline = False
        self.counters: Counter[str] = Counter()
        self.watchers: list[Watcher] = []
        self._rng = random.Random(seed)
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    # --- control (from the test's thread) -----------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    # --- one connection -----------------------------------------------------------------------

    def _decide(self, name: str, rate: float) -> bool:
        if rate <= 0:
            return False
        if self.counters[name] == 0:
            return True
        return self._rng.random() < rate

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for attempt in range(len(self.backends)):
            index = (self._next + attempt) % len(self.backends)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.backends[index]), timeout=5
                )
            except (OSError, TimeoutError):
                self.counters["backend_refused"] += 1
                continue
            self._next = index + 1
            return index, reader, writer
        return None

    async def _copy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        length: int,
        rate: int,
        sink: bytearray | None = None,
        reset_is_eof: bool = False,
    ) -> int:
        """Copy `length` bytes (or until EOF when length < 0); returns the bytes copied. With
        `reset_is_eof`, a reader reset before the first byte counts as an EOF: an app server killed
        -9 before it had read the whole request resets the connection instead of closing it."""
        copied = 0
        while length < 0 or copied < length:
            want = PIECE if length < 0 else min(PIECE, length - copied)
            try:
                piece = await asyncio.wait_for(reader.read(want), timeout=READ_TIMEOUT)
            except ConnectionResetError:
                if copied or not reset_is_eof:
                    raise
                break
            if not piece:
                break
            writer.write(piece)
            await writer.drain()
            if sink is not None:
                sink.extend(piece)
            copied += len(piece)
            if rate:
                await asyncio.sleep(len(piece) / rate)
        return copied

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            try:
                head = await asyncio.wait_for(client_reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
                client_writer.close()
                return
            if self.offline:
                self.counters["offline_reset"] += 1
                _reset(client_writer)
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            kind = kind_of(method, target)
            faults = self.faults
            slow = self._decide("slow", faults.slow)
            cut = kind == "upload_patch" and length > 1 and self._decide("reset_upload", faults.reset_upload)
            drop = not cut and kind in DROPPABLE and self._decide(f"drop_{kind}", faults.drop_response)
            rate = faults.slow_bytes_per_second if slow else 0
            if slow:
                self.counters["slow"] += 1

            connected = await self._connect()
            if connected is None:
                _reset(client_writer)
                return
            backend, upstream_reader, upstream_writer = connected
            self.counters[f"to_backend_{backend}"] += 1
            upstream_writer.write(head)
            if cut:
                sent = await self._copy(client_reader, upstream_writer, self._rng.randint(1, length - 1), rate)
                self.counters["reset_upload"] += 1
                self.counters["reset_upload_bytes_sent"] += sent
                upstream_writer.close()  # a clean EOF: the server keeps what arrived
                _reset(client_writer)
                return
            body = bytearray() if kind == "push" else None
            await self._copy(client_reader, upstream_writer, length, rate, body)
            for watcher in list(self.watchers):
                watcher(backend, kind, bytes(body or b""))

            if drop:
                response = b""
                try:
                    while piece := await asyncio.wait_for(upstream_reader.read(PIECE), timeout=READ_TIMEOUT):
                        response += piece
                except ConnectionResetError:
                    if response:
                        raise
                if response:
                    self.counters[f"drop_{kind}"] += 1
                else:
                    self.counters[f"upstream_lost_{kind}"] += 1
                _reset(client_writer)
                return
            copied = await self._copy(upstream_reader, client_writer, -1, rate, reset_is_eof=True)
            if copied == 0:
                # The app server died with the request in flight (kill -9): the client sees a reset.
                self.counters[f"upstream_lost_{kind}"] += 1
                _reset(client_writer)
                return
            self.counters[f"ok_{kind}"] += 1
            client_writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.counters["proxy_error"] += 1
            _reset(client_writer)
        finally:
            if upstream_writer is not None:
                upstream_writer.close()
