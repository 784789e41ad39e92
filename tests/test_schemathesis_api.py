"""Schemathesis against /api/schema/: every documented operation, called in-process through the
WSGI application with a device token, with schema-valid and schema-violating input. No answer
may be a 5xx, and every answer must be one the schema documents (status code, content type,
body, headers).

Bounded: at most MAX_EXAMPLES generated cases per operation and phase, deterministic (the same
cases every run, so CI does not flake on a new random draw), and a hard timeout per operation.
`FUZZ_RANDOM=1` draws new cases instead and `FUZZ_EXAMPLES=200` draws more, for exploring locally.

Where the checks and the API legitimately disagree, the configuration below says so, with why:
- unknown headers and query parameters are ignored, as HTTP intends (`allow-extra-parameters`);
- answers to bad input may also be 411, 412 (tus: no Tus-Resumable), 413 and 428, not only the
  check's default 4xx list;
- some schema-valid requests are refused for reasons a schema cannot state: a pull cursor this
  server never handed out, a create without data or an update without base_version (cross-field
  rules), bytes that do not hash to the declared sha256, a tus offset that is not the upload's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from config.wsgi import application

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "411", "412", "413", "415", "422", "428", "429"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]


def accepted_also(path: str, *statuses: str, method: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "include-path": path,
        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, *statuses]}},
    }
    if method:
        operation["include-method"] = method
    return operation


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": not os.environ.get("FUZZ_RANDOM"),
            "allow-extra-parameters": False,
        },
        "checks": {
            "negative_data_rejection": {"expected-statuses": REJECTIONS},
            "missing_required_header": {"expected-statuses": REJECTIONS},
            "positive_data_acceptance": {"expected-statuses": ACCEPTED},
        },
        "operations": [
            accepted_also("/api/v1/sync/pull", "400"),  # invalid_cursor
            accepted_also("/api/v1/sync/push", "400"),  # create without data, update without base_version
            accepted_also("/api/v1/attachments/{attachment_id}", "422", method="PUT"),  # checksum_mismatch
            # Metadata values (a sha256 that is no hex), a body longer than Upload-Length, a digest
            # that does not match the body.
            accepted_also("/api/v1/uploads/", "400", "413", "460"),
            # A digest of the wrong length or that does not match, an offset that is not the upload's.
            accepted_also("/api/v1/uploads/{attachment_id}", "400", "410", "413", "423", "460"),
            # Registration with made-up credentials is refused (401), as it should be.
            accepted_also("/api/v1/devices/register", "400"),
        ],
    }
)

# A tus chunk is bytes, like any octet stream.
schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/pdf", "image/heic", "image/heif"], "application/octet-stream"
)

schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=CONFIG)


@pytest.fixture(autouse=True)
def _one_connection_per_test() -> Iterator[None]:
    # The WSGI handler closes the database connection after each request; on MariaDB that would
    # end the test's transaction. Django's test client switches this off the same way.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.timeout(180)
def test_every_operation_answers_as_documented_and_never_with_a_5xx(case: Any, device_for: Any) -> None:
    token = device_for("alice").token
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
