"""OpenAPI post-processing: the error answers every device call can get, documented once."""

from __future__ import annotations

from typing import Any

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
# Binary bodies drf-spectacular cannot tell are required: a simple upload and a tus chunk are
# their body (a tus creation's body is optional: creation-with-upload).
_BODY_REQUIRED = {"attachment_put", "tus_patch"}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}


def document_common_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every operation that takes a device token can answer 401 (no, unknown or revoked token)
    and 429 (the device's rate limit, `throttled`, with Retry-After); registration answers 429
    after too many failed passwords. Views document only their own errors."""
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            secured = any("deviceToken" in requirement for requirement in operation.get("security", []))
            if secured:
                responses.setdefault("401", {"content": _ERROR, "description": "No, unknown or revoked token."})
            body = operation.get("requestBody")
            if body and operation.get("operationId") in _BODY_REQUIRED:
                body["required"] = True
            if secured or path.endswith("/devices/register"):
                responses.setdefault(
                    "429", {"content": _ERROR, "headers": _RETRY_AFTER, "description": "Rate limited (`throttled`)."}
                )
    return result
