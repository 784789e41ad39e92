"""The two kinds of failure a device has to tell apart: try again later, or stop and show it."""

from __future__ import annotations

from typing import Any


class Transient(Exception):
    """No answer, or an answer that says "later": a refused or reset connection, a timeout, a
    response cut short, a 5xx, 408, 423, 429. Retrying the same request is safe and right.

    `retry_after` is the server's Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ApiError(Exception):
    """The server answered and refused the request as a whole; sending it again gets the same answer."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}

    @classmethod
    def from_body(cls, status: int, body: Any) -> ApiError:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            fields = error.get("fields")
            return cls(
                status,
                str(error.get("code", "error")),
                str(error.get("message", "")),
                fields if isinstance(fields, dict) else None,
            )
        return cls(status, f"http_{status}", "The server refused the request.")


class DeviceError(Exception):
    """A local mistake: not registered, an unknown record, bad capture input."""
