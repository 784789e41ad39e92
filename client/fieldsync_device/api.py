"""The server's device API (docs/sync-protocol.md, docs/attachments.md), one method per call.

Every method either returns what the server said, raises `Transient` (try again later, the same
request) or raises `ApiError` (the server refused the request as a whole)."""

from __future__ import annotations

import base64
import json
from typing import Any, BinaryIO

from fieldsync_device.errors import ApiError, Transient
from fieldsync_device.transport import Body, Response, Transport

TUS_VERSION = "1.0.0"
TUS_CHUNK_TYPE = "application/offset+octet-stream"
# Answers that mean "not now": the request may succeed as it is when repeated.
RETRY_STATUSES = {408, 423, 425, 429, 460}


def _retry_after(response: Response) -> float | None:
    raw = response.header("Retry-After")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


def checked(response: Response, *, ok: tuple[int, ...] = (200,)) -> Response:
    if response.status in ok:
        return response
    if response.status >= 500 or response.status in RETRY_STATUSES:
        raise Transient(f"HTTP {response.status}", retry_after=_retry_after(response))
    try:
        body = response.json()
    except Transient:
        body = None
    raise ApiError.from_body(response.status, body)


def _object(response: Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise Transient(f"HTTP {response.status}: expected a JSON object")
    return body


def _metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items() if value)


class ServerApi:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    # --- devices and types ------------------------------------------------------------------

    def register(self, *, username: str, password: str, name: str, platform: str) -> dict[str, Any]:
        body = Body.of(_json({"username": username, "password": password, "name": name, "platform": platform}))
        response = self.transport.request(
            "POST", "/api/v1/devices/register", headers={"Content-Type": "application/json"}, body=body
        )
        return _object(checked(response, ok=(201,)))

    def me(self) -> dict[str, Any]:
        return _object(checked(self.transport.request("GET", "/api/v1/me")))

    def record_types(self) -> list[dict[str, Any]]:
        body = checked(self.transport.request("GET", "/api/v1/record-types")).json()
        if not isinstance(body, list):
            raise Transient("record-types: expected a JSON list")
        return body

    # --- sync -------------------------------------------------------------------------------

    def push(self, body: bytes) -> list[dict[str, Any]]:
        """POST a push body built by the caller (the actions' stored bytes, verbatim)."""
        response = self.transport.request(
            "POST", "/api/v1/sync/push", headers={"Content-Type": "application/json"}, body=Body.of(body)
        )
        results = _object(checked(response)).get("results")
        if not isinstance(results, list):
            raise Transient("push: the response has no results list")
        return results

    def pull(self, *, cursor: str | None, limit: int) -> dict[str, Any]:
        query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        page = _object(checked(self.transport.request("GET", "/api/v1/sync/pull", query=query)))
        if not isinstance(page.get("changes"), list) or not isinstance(page.get("cursor"), str):
            raise Transient("pull: the page has no changes or cursor")
        return page

    def action(self, action_id: str) -> dict[str, Any] | None:
        response = self.transport.request("GET", f"/api/v1/sync/actions/{action_id}")
        if response.status == 404:
            return None
        return _object(checked(response))

    # --- attachments (tus 1.0.0) ------------------------------------------------------------

    def tus_create(self, *, attachment_id: str, length: int, filename: str, content_type: str, sha256: str) -> int:
        """Create the upload, or find the one this id already has (creation is idempotent per id,
        length and sha256). Returns the server's offset: 0 for a new upload."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Length": str(length),
            "Upload-Metadata": _metadata(id=attachment_id, filename=filename, content_type=content_type, sha256=sha256),
        }
        response = checked(self.transport.request("POST", "/api/v1/uploads/", headers=headers), ok=(201,))
        return _offset(response)

    def tus_offset(self, attachment_id: str) -> int | None:
        """HEAD: how many bytes the server has. None when it has no such upload (or it expired)."""
        response = self.transport.request(
            "HEAD", f"/api/v1/uploads/{attachment_id}", headers={"Tus-Resumable": TUS_VERSION}
        )
        if response.status in (404, 410):
            return None
        return _offset(checked(response))

    def tus_patch(self, attachment_id: str, *, offset: int, stream: BinaryIO, length: int) -> int:
        """Send `length` bytes of `stream` at `offset`; returns the new offset. A 422 means the
        whole file did not match its sha256 (the server rejected it)."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Offset": str(offset),
            "Content-Type": TUS_CHUNK_TYPE,
        }
        response = self.transport.request(
            "PATCH",
            f"/api/v1/uploads/{attachment_id}",
            headers=headers,
            body=Body(stream=stream, length=length),
        )
        return _offset(checked(response, ok=(204,)))

    def attachment(self, attachment_id: str) -> dict[str, Any] | None:
        response = self.transport.request("GET", f"/api/v1/attachments/{attachment_id}")
        if response.status == 404:
            return None
        return _object(checked(response))


def _offset(response: Response) -> int:
    try:
        return int(response.header("Upload-Offset") or "")
    except ValueError:
        raise Transient(f"tus: HTTP {response.status} without Upload-Offset") from None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
