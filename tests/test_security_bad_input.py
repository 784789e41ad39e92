"""The bad-input catalogue: hostile and broken input against every endpoint that reads a body,
a header or a query string. Each case gets a 4xx with an error code and writes nothing; SQL and
HTML in strings are data, stored as sent and shown escaped in the admin.

tests/test_sync_push.py already has the push's structural cases (malformed, truncated, not
UTF-8, NaN, Infinity, duplicate keys, deep nesting, wrong types of ids and versions, too many
actions, too many bytes); this file adds what they do not cover and the other endpoints."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from attachments.models import Attachment
from audit.models import AuditEvent
from records.models import Record, RecordVersion
from sync.models import Device, LedgerEntry
from tests.attachments_support import media, png, put
from tests.conftest import DeviceClient

__all__ = ["media"]

PUSH = "/api/v1/sync/push"
REGISTER = "/api/v1/devices/register"
NOW = "2026-11-25T09:00:00Z"


def rows() -> dict[str, int]:
    return {
        "records": Record.objects.count(),
        "versions": RecordVersion.objects.count(),
        "ledger": LedgerEntry.objects.count(),
        "audit": AuditEvent.objects.count(),
        "devices": Device.objects.count(),
        "attachments": Attachment.objects.count(),
    }


def action(**changes: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "op": "create",
        "type": "stock_count",
        "record": str(uuid.uuid4()),
        "data": {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"},
        "captured_at": NOW,
        **changes,
    }


def push_body(*actions: dict[str, Any], **changes: Any) -> str:
    """A push with a good action first: a bad one must not let the good one through either."""
    return json.dumps({"sent_at": NOW, "actions": [action(), *actions], **changes})


def with_data(**fields: Any) -> str:
    base = {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"}
    return push_body(action(data={**base, **fields}))


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    return dict(body["error"])


@pytest.fixture
def alice(device_for: Any) -> DeviceClient:
    return device_for("alice")


# --- push bodies ------------------------------------------------------------------------------

LONG = "x" * 10_001
PUSH_CASES: dict[str, tuple[str | bytes, int, str, str | None]] = {
    # name: (raw body, status, code, a field path the error names)
    "empty-body": ("", 400, "invalid_request", None),
    "whitespace-only": ("  \n ", 400, "malformed_json", None),
    "trailing-garbage": (push_body() + "]", 400, "malformed_json", None),
    "two-documents": (push_body() + push_body(), 400, "malformed_json", None),
    "utf8-bom": ("\ufeff" + push_body(), 400, "malformed_json", None),
    "utf16": (push_body().encode("utf-16"), 400, "malformed_json", None),
    "single-quotes": (push_body().replace('"', "'"), 400, "malformed_json", None),
    "a-number": ("42", 400, "invalid_request", None),
    "true": ("true", 400, "invalid_request", None),
    "huge-float": (with_data(counted="HUGE").replace('"HUGE"', "1e400"), 400, "malformed_json", None),
    "negative-huge-float": (with_data(counted="HUGE").replace('"HUGE"', "-1e400"), 400, "malformed_json", None),
    "integer-with-5000-digits": (with_data(counted="HUGE").replace('"HUGE"', "9" * 5000), 400, "malformed_json", None),
    "lone-high-surrogate-in-a-string": (with_data(note="NOTE").replace("NOTE", "\\ud800"), 400, "malformed_json", None),
    "lone-low-surrogate-in-a-key": (
        with_data(note="x").replace('"note"', '"no\\udc00te"'),
        400,
        "malformed_json",
        None,
    ),
    "nul-in-a-string": (with_data(note="a\x00b"), 400, "invalid_request", "actions.1.data.note"),
    "nul-in-a-key": (with_data(**{"no\x00te": "x"}), 400, "invalid_request", "actions.1.data.no\\u0000te"),
    "rtl-override-in-a-key": (with_data(**{"note\u202e": "x"}), 400, "invalid_request", "actions.1.data.note\\u202e"),
    "string-over-the-cap": (with_data(note=LONG), 400, "invalid_request", "actions.1.data.note"),
    "nested-string-over-the-cap": (
        push_body(action(type="inspection", data={"items": [{"item": "brakes", "note": LONG}]})),
        400,
        "invalid_request",
        "actions.1.data.items.0.note",
    ),
    "key-over-the-cap": (with_data(**{"k" * 129: 1}), 400, "invalid_request", None),
    "base-version-past-any-integer-column": (
        push_body(action(op="update", base_version=2**70)),
        400,
        "invalid_request",
        "actions.1.base_version",
    ),
    "base-version-negative": (push_body(action(op="update", base_version=-1)), 400, "invalid_request", None),
    "sent-at-a-number": (push_body(sent_at=1732525200), 400, "invalid_request", "sent_at"),
    "sent-at-null": (push_body(sent_at=None), 400, "invalid_request", "sent_at"),
    "sent-at-a-list": (push_body(sent_at=[NOW]), 400, "invalid_request", "sent_at"),
    "sent-at-out-of-range": (push_body(sent_at="10000-01-01T00:00:00Z"), 400, "invalid_request", "sent_at"),
    "captured-at-a-number": (push_body(action(captured_at=0)), 400, "invalid_request", "actions.1.captured_at"),
    "captured-at-february-30": (
        push_body(action(captured_at="2026-02-30T00:00:00Z")),
        400,
        "invalid_request",
        "actions.1.captured_at",
    ),
    "actions-an-object": (json.dumps({"sent_at": NOW, "actions": {"0": action()}}), 400, "invalid_request", "actions"),
    "actions-a-string": (json.dumps({"sent_at": NOW, "actions": "all"}), 400, "invalid_request", "actions"),
    "actions-null": (json.dumps({"sent_at": NOW, "actions": None}), 400, "invalid_request", "actions"),
    "an-action-a-string": (json.dumps({"sent_at": NOW, "actions": [action(), "create"]}), 400, "invalid_request", None),
    "an-action-null": (json.dumps({"sent_at": NOW, "actions": [action(), None]}), 400, "invalid_request", None),
    "an-action-a-list": (json.dumps({"sent_at": NOW, "actions": [action(), [1]]}), 400, "invalid_request", None),
    "op-a-number": (push_body(action(op=1)), 400, "invalid_request", "actions.1.op"),
    "op-null": (push_body(action(op=None)), 400, "invalid_request", "actions.1.op"),
    "type-null": (push_body(action(type=None)), 400, "invalid_request", "actions.1.type"),
    "type-a-list": (push_body(action(type=["stock_count"])), 400, "invalid_request", "actions.1.type"),
    "type-with-a-nul": (push_body(action(type="stock\x00count")), 400, "invalid_request", "actions.1.type"),
    "team-a-number": (push_body(action(team=7)), 400, "invalid_request", "actions.1.team"),
    "team-an-object": (push_body(action(team={"slug": "north"})), 400, "invalid_request", "actions.1.team"),
    "team-too-long": (push_body(action(team="n" * 65)), 400, "invalid_request", "actions.1.team"),
    "data-null": (push_body(action(data=None)), 400, "invalid_request", "actions.1.data"),
    "data-a-string": (push_body(action(data="{}")), 400, "invalid_request", "actions.1.data"),
    "record-a-list": (push_body(action(record=[str(uuid.uuid4())])), 400, "invalid_request", "actions.1.record"),
    "id-uppercase-urn": (push_body(action(id=f"urn:uuid:{uuid.uuid4()}")), 400, "invalid_request", "actions.1.id"),
    "id-with-trailing-newline": (push_body(action(id=f"{uuid.uuid4()}\n")), 400, "invalid_request", "actions.1.id"),
    "deep-nesting-in-an-array-of-objects": (
        '{"sent_at": ' + '{"a":' * 70 + "1" + "}" * 70 + "}",
        400,
        "malformed_json",
        None,
    ),
}


@pytest.mark.parametrize(("raw", "status", "code", "field"), list(PUSH_CASES.values()), ids=list(PUSH_CASES))
def test_a_bad_push_gets_a_4xx_with_a_code_and_writes_nothing(
    alice: DeviceClient, raw: str | bytes, status: int, code: str, field: str | None
) -> None:
    before = rows()

    response = alice.generic("POST", PUSH, raw, content_type="application/json")

    assert response.status_code == status, response.content
    error = error_of(response)
    assert error["code"] == code, error
    if field:
        assert field in error["fields"], error
    assert rows() == before


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415)],
)
def test_a_push_that_is_not_json_is_415_and_writes_nothing(alice: DeviceClient, content_type: str, status: int) -> None:
    before = rows()

    response = alice.generic("POST", PUSH, push_body(), content_type=content_type)

    assert response.status_code == status
    assert error_of(response)["code"] == "unsupported_media_type"
    assert rows() == before


def test_a_chunked_push_without_content_length_is_411(alice: DeviceClient) -> None:
    response = alice.generic(
        "POST", PUSH, push_body(), content_type="application/json", CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )

    assert response.status_code == 411
    assert error_of(response)["code"] == "length_required"


def test_a_string_at_the_cap_is_accepted(alice: DeviceClient, settings: Any) -> None:
    settings.SYNC_MAX_STRING_CHARS = 2000  # the schema's own maxLength for a note

    response = alice.generic("POST", PUSH, with_data(note="é" * 2000), content_type="application/json")

    assert [r["status"] for r in response.json()["results"]] == ["applied", "applied"]


def test_a_valid_surrogate_pair_is_one_character_and_is_accepted(alice: DeviceClient) -> None:
    raw = with_data(note="NOTE").replace("NOTE", "\\ud83d\\ude9c")  # an escaped tractor emoji

    response = alice.generic("POST", PUSH, raw, content_type="application/json")

    [_, result] = response.json()["results"]
    assert result["status"] == "applied"
    assert Record.objects.get(pk=result["record"]).data["note"] == "\U0001f69c"


def test_an_rtl_override_in_a_value_is_text_stored_as_sent(alice: DeviceClient) -> None:
    # Values may carry bidi controls (Android's BidiFormatter wraps mixed-direction text in them);
    # only keys, which name fields, may not.
    note = "\u202eevil.exe\u202c and \u2067عربى\u2069"

    response = alice.generic("POST", PUSH, with_data(note=note), content_type="application/json")

    [_, result] = response.json()["results"]
    assert Record.objects.get(pk=result["record"]).data["note"] == note


# --- SQL and HTML are data ------------------------------------------------------------------

HOSTILE = {
    "location": "'; DROP TABLE records_record; --",
    "sku": "1' OR '1'='1",
    "note": '<script>alert("x")</script><img src=x onerror=alert(1)>"\'&',
}


def test_sql_and_html_in_strings_are_stored_verbatim_and_pulled_back_verbatim(alice: DeviceClient) -> None:
    response = alice.generic("POST", PUSH, with_data(**HOSTILE), content_type="application/json")

    [_, result] = response.json()["results"]
    assert result["status"] == "applied"
    stored = Record.objects.get(pk=result["record"]).data
    assert {k: stored[k] for k in HOSTILE} == HOSTILE
    [change] = [c for c in alice.pull().json()["changes"] if c["record"] == result["record"]]
    assert {k: change["data"][k] for k in HOSTILE} == HOSTILE
    assert Record.objects.count() == 2  # the tables are all still there


def test_html_in_record_data_device_names_and_filenames_is_escaped_in_the_admin(
    device_for: Any, media: Any, django_capture_on_commit_callbacks: Any
) -> None:
    evil = "<script>alert(1)</script>"
    response = Client().post(
        REGISTER,
        {"username": "alice", "password": "fieldsync-demo", "name": evil, "platform": evil},
        content_type="application/json",
    )
    assert response.status_code == 201
    alice = DeviceClient()
    alice.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    with django_capture_on_commit_callbacks(execute=True):
        assert put(alice, png(), filename=f"{evil}.png").status_code == 201
    [_, result] = alice.generic("POST", PUSH, with_data(**HOSTILE), content_type="application/json").json()["results"]
    record = Record.objects.get(pk=result["record"])
    device = Device.objects.get(name=evil)
    attachment = Attachment.objects.get(owner__username="alice")

    admin = Client()
    admin.force_login(User.objects.get(username="admin"))
    pages = [
        f"/admin/records/record/{record.pk}/change/",
        "/admin/sync/device/",
        f"/admin/sync/device/{device.pk}/change/",
        "/admin/attachments/attachment/",
        f"/admin/attachments/attachment/{attachment.pk}/change/",
        "/admin/audit/auditevent/",
        f"/admin/sync/ledgerentry/record/{record.pk}/timeline/",
    ]
    for url in pages:
        page = admin.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        assert "<script>alert" not in html, url
        assert "<img src=x" not in html, url
    record_page = admin.get(pages[0]).content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in record_page or "&lt;script&gt;" in record_page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in admin.get(pages[1]).content.decode()


# --- registration -----------------------------------------------------------------------------

REGISTER_CASES: dict[str, tuple[str | bytes, int, str]] = {
    "empty": ("", 400, "invalid_request"),
    "truncated": ('{"username": "alice", "password": "fieldsync-demo", "na', 400, "malformed_json"),
    "nan": ('{"username": "alice", "password": NaN, "name": "x"}', 400, "malformed_json"),
    "huge-number": ('{"username": "alice", "password": 1e400, "name": "x"}', 400, "malformed_json"),
    "lone-surrogate": ('{"username": "alice", "password": "\\udfff", "name": "x"}', 400, "malformed_json"),
    "nul-in-username": (
        '{"username": "ali\\u0000ce", "password": "fieldsync-demo", "name": "x"}',
        400,
        "invalid_request",
    ),
    "nul-in-name": ('{"username": "alice", "password": "fieldsync-demo", "name": "a\\u0000b"}', 400, "invalid_request"),
    "username-a-list": ('{"username": ["alice"], "password": "fieldsync-demo", "name": "x"}', 400, "invalid_request"),
    "password-an-object": ('{"username": "alice", "password": {"$ne": ""}, "name": "x"}', 400, "invalid_request"),
    "password-true": ('{"username": "alice", "password": true, "name": "x"}', 400, "invalid_request"),
    "username-too-long": (json.dumps({"username": "a" * 151, "password": "x", "name": "x"}), 400, "invalid_request"),
    "name-too-long": (
        json.dumps({"username": "alice", "password": "fieldsync-demo", "name": "n" * 201}),
        400,
        "invalid_request",
    ),
    "password-too-long": (
        json.dumps({"username": "alice", "password": "p" * 1025, "name": "x"}),
        400,
        "invalid_request",
    ),
    "sql-in-username": (
        json.dumps({"username": "alice' OR '1'='1", "password": "x", "name": "x"}),
        401,
        "invalid_credentials",
    ),
    "deep": ('{"username": ' + "[" * 100 + "]" * 100 + "}", 400, "malformed_json"),
}


@pytest.mark.parametrize(("raw", "status", "code"), list(REGISTER_CASES.values()), ids=list(REGISTER_CASES))
def test_a_bad_registration_gets_a_4xx_with_a_code_and_makes_no_device(
    demo: None, raw: str, status: int, code: str
) -> None:
    before = rows()

    response = Client().generic("POST", REGISTER, raw, content_type="application/json")

    assert response.status_code == status, response.content
    assert error_of(response)["code"] == code
    assert rows() == before


# --- query strings, paths and headers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=1e3", "invalid_limit"),
        ("limit=%EF%BC%95", "invalid_limit"),  # a fullwidth digit five
        ("limit=" + "9" * 5000, "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("limit=1%00", "invalid_limit"),
        ("cursor=" + "A" * 10_000, "invalid_cursor"),
        ("cursor=%00", "invalid_cursor"),
        ("cursor=%ED%A0%80", "invalid_cursor"),  # an encoded lone surrogate: not UTF-8
        ("cursor=%27%20OR%201%3D1%20--", "invalid_cursor"),
        ("cursor=eyJzZXEiOiAtMX0", "invalid_cursor"),  # base64 of {"seq": -1}
    ],
)
def test_a_bad_pull_query_gets_400_with_a_code(alice: DeviceClient, query: str, code: str) -> None:
    response = alice.get(f"/api/v1/sync/pull?{query}")

    assert response.status_code == 400, response.content
    assert error_of(response)["code"] == code


@pytest.mark.parametrize("action_id", ["not-a-uuid", "%00", "1%27%20OR%201=1", "0" * 5000])
def test_an_action_id_that_is_no_uuid_is_404(alice: DeviceClient, action_id: str) -> None:
    response = alice.get(f"/api/v1/sync/actions/{action_id}")

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer a b",
        "Bearer \x00",
        "Bearer " + "A" * 10_000,
        "Bearer é",
        "Bearer ' OR 1=1 --",
        f"Bearer {uuid.uuid4().hex}.",
        f"Bearer {uuid.uuid4().hex}.{'x' * 43}",
        "Basic YWxpY2U6ZmllbGRzeW5jLWRlbW8=",  # alice's password over Basic: not a way in
    ],
)
def test_a_bad_authorization_header_is_401(demo: None, header: str) -> None:
    response = Client().get("/api/v1/me", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert error_of(response)["code"] in {"invalid_token", "not_authenticated"}


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"HTTP_UPLOAD_LENGTH": "1" + "0" * 30}, 413, "file_too_large"),
        ({"HTTP_UPLOAD_LENGTH": "-5"}, 400, "invalid_upload_length"),
        ({"HTTP_UPLOAD_LENGTH": "5e3"}, 400, "upload_length_required"),
        ({"HTTP_UPLOAD_LENGTH": "\u0665"}, 400, "upload_length_required"),  # an Arabic-Indic five
        ({"HTTP_UPLOAD_LENGTH": "4", "HTTP_UPLOAD_METADATA": "id !!!"}, 400, "invalid_metadata"),
        ({"HTTP_UPLOAD_LENGTH": "4", "HTTP_UPLOAD_METADATA": f"id {b64('1 OR 1=1')}"}, 400, "invalid_metadata"),
        ({"HTTP_UPLOAD_LENGTH": "4", "HTTP_UPLOAD_METADATA": f"sha256 {b64('nothex')}"}, 400, None),
        (
            {"HTTP_UPLOAD_LENGTH": "4", "HTTP_UPLOAD_METADATA": "filename " + base64.b64encode(b"\xff").decode()},
            400,
            "invalid_metadata",
        ),
        ({"HTTP_UPLOAD_LENGTH": "4", "HTTP_UPLOAD_CHECKSUM": "md5 AAAA"}, 400, "checksum_algorithm_unsupported"),
        ({"HTTP_UPLOAD_LENGTH": "4", "HTTP_UPLOAD_CHECKSUM": "sha1 !!!!"}, 400, "invalid_checksum"),
        ({"HTTP_UPLOAD_LENGTH": "4", "HTTP_UPLOAD_DEFER_LENGTH": "1"}, 400, "defer_length_unsupported"),
    ],
)
def test_bad_tus_creation_headers_get_a_4xx_with_a_code_and_create_nothing(
    alice: DeviceClient, media: Any, headers: dict[str, str], status: int, code: str | None
) -> None:
    before = rows()

    response = alice.post("/api/v1/uploads/", HTTP_TUS_RESUMABLE="1.0.0", **headers)

    assert response.status_code == status, response.content
    error = error_of(response)
    assert code is None or error["code"] == code
    assert rows() == before


@pytest.mark.parametrize("offset", ["1" + "0" * 30, "-1", "0x0", "1_0", "+1", "\u0660"])
def test_a_bad_tus_offset_gets_a_4xx_and_receives_nothing(alice: DeviceClient, media: Any, offset: str) -> None:
    created = alice.post("/api/v1/uploads/", HTTP_TUS_RESUMABLE="1.0.0", HTTP_UPLOAD_LENGTH="4")
    location = created["Location"]

    response = alice.patch(
        location,
        b"abcd",
        content_type="application/offset+octet-stream",
        HTTP_TUS_RESUMABLE="1.0.0",
        HTTP_UPLOAD_OFFSET=offset,
    )

    assert 400 <= response.status_code < 500, response.content
    assert error_of(response)["code"]
    assert Attachment.objects.get().received == 0


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"HTTP_X_SHA256": "nothex"}, 400, None),
        ({"HTTP_X_SHA256": "0" * 64 + "\x00"}, 400, None),
        ({"HTTP_X_SHA256": "' OR 1=1 --"}, 400, None),
        ({"HTTP_X_SHA256": "0" * 64}, 422, "checksum_mismatch"),
    ],
)
def test_a_bad_simple_upload_gets_a_4xx_with_a_code_and_stores_nothing(
    alice: DeviceClient, media: Any, headers: dict[str, str], status: int, code: str | None
) -> None:
    before = rows()

    response = put(alice, png(), sha="", **headers)

    assert response.status_code == status, response.content
    error = error_of(response)
    assert code is None or error["code"] == code
    assert rows() == before


def test_an_unsafe_filename_is_stored_as_a_safe_name(alice: DeviceClient, media: Any) -> None:
    response = put(alice, png(), filename="..%2F..%2Fetc%2Fpasswd%00\u202egnp.exe")

    assert response.status_code == 201
    name = Attachment.objects.get().filename
    assert "/" not in name and "\x00" not in name and ".." not in name


def test_nothing_above_is_a_server_error_in_the_log(caplog: Any, alice: DeviceClient) -> None:
    with caplog.at_level("ERROR", logger="django.request"):
        for raw, *_ in PUSH_CASES.values():
            alice.generic("POST", PUSH, raw, content_type="application/json")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# --- the admin's JSON is Python's: NaN and Infinity get in there ---------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_typed_in_the_admin_is_refused_and_nothing_is_saved(demo: None, number: str) -> None:
    from records.models import RecordType, Team

    admin = Client()
    admin.force_login(User.objects.get(username="admin"))
    data = '{"title": "T", "site": "S", "status": "open", "hours": NUMBER}'.replace("NUMBER", number)

    response = admin.post(
        "/admin/records/record/add/",
        {
            "type": RecordType.objects.get(key="job_card").pk,
            "team": Team.objects.get(slug="north").pk,
            "data": data,
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
        },
        follow=True,
    )

    assert response.status_code == 200
    assert not Record.objects.exists()
    assert not any("already exists" in str(m) for m in response.context["messages"])


def test_the_one_write_service_refuses_nan_wherever_it_comes_from(demo: None) -> None:
    from records.services import Actor, Change, apply_change

    outcome = apply_change(
        actor=Actor(user=User.objects.get(username="olivia"), source="approval"),
        change=Change(
            op="create",
            record_id=uuid.uuid4(),
            type_key="job_card",
            data={"title": "T", "site": "S", "status": "open", "hours": float("nan")},
            captured_at=timezone.now(),
            team_slug="north",
        ),
    )

    assert outcome.status == "rejected"
    assert outcome.error is not None and outcome.error.code == "schema_violation"
    assert list(outcome.error.fields) == ["data.hours"]
    assert not Record.objects.exists()
