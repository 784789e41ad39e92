"""Who may call what on the device API: every endpoint against seven callers, one row per
endpoint, the expected answer for each caller in the table below.

The callers: nobody (no token), a revoked device (alice's old phone), alice (field worker in team
north, the team of the record, attachment and upload the calls are about), carol (field worker in
team south), olivia (compliance officer, in both teams), and mark (manager) and admin (superuser),
who cannot register a device and try with their admin session instead: a session opens only the
attachment download (staff review files in the admin), nothing else of the device API.

A cell is the HTTP status, and for a push the action's outcome (`200 applied`,
`200 record_not_found`); for a pull whether the north record is in the feed (`200 sees`,
`200 blind`). Per-device and per-owner things (action results, tus uploads) are another
device's business even for an officer: `404`, never a hint that they exist.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from records.models import Record
from sync.models import Device
from sync.services import revoke_device
from tests.attachments_support import media, png, put, sha256
from tests.conftest import DeviceClient
from tests.test_attachments_records import incident

__all__ = ["media"]

CALLERS = ["nobody", "revoked", "alice", "carol", "olivia", "mark", "admin"]

# fmt: off
MATRIX: dict[str, tuple[str, ...]] = {
    #                          nobody revoked alice  carol  olivia mark   admin
    "register":               ("401", "201", "201", "201", "201", "403", "403"),
    "me":                     ("401", "401", "200", "200", "200", "401", "401"),
    "record types":           ("401", "401", "200", "200", "200", "401", "401"),
    "push an update":         ("401", "401", "200 applied", "200 record_not_found", "200 applied", "401", "401"),
    "pull":                   ("401", "401", "200 sees", "200 blind", "200 sees", "401", "401"),
    "alice's action result":  ("401", "401", "200", "404", "404", "401", "401"),
    "simple upload":          ("401", "401", "201", "201", "201", "401", "401"),
    "attachment metadata":    ("401", "401", "200", "404", "200", "401", "401"),
    "attachment download":    ("401", "401", "200", "404", "200", "200", "200"),
    "tus create":             ("401", "401", "201", "201", "201", "401", "401"),
    "tus head":               ("401", "401", "200", "404", "404", "401", "401"),
    "tus patch":              ("401", "401", "204", "404", "404", "401", "401"),
    "tus delete":             ("401", "401", "204", "404", "404", "401", "401"),
    "tus options":            ("204", "204", "204", "204", "204", "204", "204"),
    "schema":                 ("200", "200", "200", "200", "200", "200", "200"),
    "docs":                   ("200", "200", "200", "200", "200", "200", "200"),
    "healthz":                ("200", "200", "200", "200", "200", "200", "200"),
}
# fmt: on

TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}


@dataclass
class World:
    """The things the calls are about, all of team north, made by alice."""

    record: str
    action: str
    attachment: str
    make_upload: Callable[[], str]  # a fresh tus upload of alice's, 4 bytes long, none received


def tus_metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


@pytest.fixture
def world(device_for: Any, media: Any, django_capture_on_commit_callbacks: Any) -> tuple[World, dict[str, Any]]:
    alice = device_for("alice")
    photo = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):  # verification runs: the file downloads
        assert put(alice, png(), attachment_id=photo).status_code == 201
    record = str(uuid.uuid4())
    created = incident(record, [{"id": photo}])
    [result] = alice.push([created]).json()["results"]
    assert result["status"] == "applied", result

    def make_upload() -> str:
        upload = str(uuid.uuid4())
        response = alice.post(
            "/api/v1/uploads/",
            HTTP_UPLOAD_LENGTH="4",
            HTTP_UPLOAD_METADATA=tus_metadata(id=upload, filename="a.png", content_type="image/png"),
            **TUS,
        )
        assert response.status_code == 201, response.content
        return upload

    revoked = device_for("alice")
    revoke_device(device=Device.objects.get(pk=revoked.device_id), by=User.objects.get(username="admin"))
    clients: dict[str, Any] = {"nobody": APIClient(), "revoked": revoked, "alice": alice}
    for name in ("carol", "olivia"):
        clients[name] = device_for(name)
    for name in ("mark", "admin"):
        session = APIClient()
        session.force_login(User.objects.get(username=name))
        clients[name] = session
    return World(record=record, action=created["id"], attachment=photo, make_upload=make_upload), clients


def push_update(client: Any, world: World) -> Any:
    action = {
        "id": str(uuid.uuid4()),
        "op": "update",
        "type": "incident",
        "record": world.record,
        "base_version": 1,
        "data": {"severity": "high"},
        "captured_at": "2026-11-25T09:00:00Z",
    }
    return client.post("/api/v1/sync/push", {"sent_at": "2026-11-25T09:00:00Z", "actions": [action]}, format="json")


def register(caller: str) -> Callable[[Any, World], Any]:
    def call(client: Any, world: World) -> Any:
        username = "alice" if caller in ("nobody", "revoked") else caller
        password = "not-the-password" if caller == "nobody" else "fieldsync-demo"
        body = {"username": username, "password": password, "name": "another phone"}
        return APIClient().post("/api/v1/devices/register", body, format="json")

    return call


def chunk(client: Any, world: World) -> Any:
    return client.patch(
        f"/api/v1/uploads/{world.make_upload()}",
        b"\x89PN",
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET="0",
        **TUS,
    )


CALLS: dict[str, Callable[[Any, World], Any]] = {
    "me": lambda c, w: c.get("/api/v1/me"),
    "record types": lambda c, w: c.get("/api/v1/record-types"),
    "push an update": push_update,
    "pull": lambda c, w: c.get("/api/v1/sync/pull"),
    "alice's action result": lambda c, w: c.get(f"/api/v1/sync/actions/{w.action}"),
    "simple upload": lambda c, w: put(c, png(color="green")),
    "attachment metadata": lambda c, w: c.get(f"/api/v1/attachments/{w.attachment}"),
    "attachment download": lambda c, w: c.get(f"/api/v1/attachments/{w.attachment}/content"),
    "tus create": lambda c, w: c.post(
        "/api/v1/uploads/",
        HTTP_UPLOAD_LENGTH="4",
        HTTP_UPLOAD_METADATA=tus_metadata(sha256=sha256(b"abcd"), content_type="image/png"),
        **TUS,
    ),
    "tus head": lambda c, w: c.head(f"/api/v1/uploads/{w.make_upload()}", **TUS),
    "tus patch": chunk,
    "tus delete": lambda c, w: c.delete(f"/api/v1/uploads/{w.make_upload()}", **TUS),
    "tus options": lambda c, w: c.options("/api/v1/uploads/"),
    "schema": lambda c, w: c.get("/api/schema/"),
    "docs": lambda c, w: c.get("/api/docs/"),
    "healthz": lambda c, w: c.get("/healthz"),
}


def outcome(endpoint: str, response: Any, world: World) -> str:
    status = str(response.status_code)
    if response.status_code != 200:
        return status
    if endpoint == "push an update":
        [result] = response.json()["results"]
        return f"{status} {result['error']['code'] if result['error'] else result['status']}"
    if endpoint == "pull":
        seen = {change["record"] for change in response.json()["changes"]}
        return f"{status} {'sees' if world.record in seen else 'blind'}"
    return status


@pytest.mark.parametrize("endpoint", list(MATRIX))
def test_each_caller_gets_the_answer_the_matrix_says(endpoint: str, world: tuple[World, dict[str, Any]]) -> None:
    things, clients = world
    got = []
    for caller in CALLERS:
        call = register(caller) if endpoint == "register" else CALLS[endpoint]
        got.append(outcome(endpoint, call(clients[caller], things), things))

    assert dict(zip(CALLERS, got, strict=True)) == dict(zip(CALLERS, MATRIX[endpoint], strict=True))


def test_the_matrix_covers_every_api_route() -> None:
    from django.urls import get_resolver

    api = get_resolver().url_patterns
    names = {pattern.name for pattern in api if getattr(pattern, "name", None)}
    v1 = next(p for p in api if str(p.pattern) == "api/v1/")
    names |= {pattern.name for pattern in v1.url_patterns}  # type: ignore[attr-defined]
    covered = {
        "device-register": "register",
        "me": "me",
        "record-types": "record types",
        "sync-push": "push an update",
        "sync-pull": "pull",
        "sync-action": "alice's action result",
        "attachment": "attachment metadata",
        "attachment-content": "attachment download",
        "tus-create": "tus create",
        "tus-upload": "tus patch",
        "schema": "schema",
        "api-docs": "docs",
        "healthz": "healthz",
    }
    assert names - {"admin-login"} == set(covered)
    assert set(covered.values()) <= set(MATRIX)


def test_nothing_the_outsiders_sent_changed_the_record(world: tuple[World, dict[str, Any]]) -> None:
    things, clients = world
    for caller in ("nobody", "revoked", "carol", "mark", "admin"):
        push_update(clients[caller], things)

    record = Record.objects.get(pk=things.record)
    assert (record.version, record.data["severity"]) == (1, "low")


def test_a_revoked_device_is_told_so(world: tuple[World, dict[str, Any]]) -> None:
    _, clients = world
    revoked: DeviceClient = clients["revoked"]

    response = revoked.get("/api/v1/me")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "device_revoked"
