"""HTTP over the standard library: one connection per request, bodies streamed from files.

One request per connection (`Connection: close`) on purpose: a phone changes networks between
requests, and a fresh connection never inherits a half-dead socket. Any failure before a complete
response has been read is `Transient`: the caller cannot know whether the server acted, and every
call the client makes is safe to repeat (that is what the idempotency ledger and tus are for)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from fieldsync_device import __version__
from fieldsync_device.errors import DeviceError, Transient

STREAM_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            # A proxy's HTML error page, or a body cut short in a way the length did not catch.
            raise Transient(f"HTTP {self.status} with a body that is not JSON") from None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Body:
    """A request body: bytes, or `length` bytes read from `stream` (which is not closed)."""

    data: bytes | None = None
    stream: BinaryIO | None = None
    length: int = 0

    @classmethod
    def of(cls, data: bytes) -> Body:
        return cls(data=data, length=len(data))


class Transport:
    def __init__(self, base_url: str, *, timeout: float = 30.0, token: str | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL must be http(s)://host[:port], got {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
    ) -> Response:
        target = self.prefix + path + (f"?{urlencode(query)}" if query else "")
        connection: http.client.HTTPConnection
        if self.scheme == "https":
            connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            all_headers = {
                "Accept": "application/json",
                "Connection": "close",
                "User-Agent": f"fieldsync-device/{__version__}",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
                **(headers or {}),
            }
            for name, value in all_headers.items():
                connection.putheader(name, value)
            if body is not None or method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(body.length if body else 0))
            connection.endheaders()
            if body is not None:
                _send_body(connection, body)
            response = connection.getresponse()
            data = response.read()
            received = {name.lower(): value for name, value in response.getheaders()}
            return Response(status=response.status, body=data, headers=received)
        except (OSError, http.client.HTTPException) as exc:
            raise Transient(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        finally:
            connection.close()


def _send_body(connection: http.client.HTTPConnection, body: Body) -> None:
    if body.data is not None:
        connection.send(body.data)
        return
    assert body.stream is not None
    remaining = body.length
    while remaining > 0:
        chunk = body.stream.read(min(STREAM_CHUNK, remaining))
        if not chunk:
            raise DeviceError("the local file is shorter than its recorded size")
        connection.send(chunk)
        remaining -= len(chunk)
