"""Devices: registration, the bearer token, last_seen, /me, and revocation through the admin."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from sync.models import Device
from tests.conftest import DeviceClient

PASSWORD = "fieldsync-demo"
REGISTER = "/api/v1/devices/register"


def register(body: Any, **kwargs: Any) -> Any:
    return APIClient().post(REGISTER, body, format="json", **kwargs)


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def as_bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def admin_client(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


# --- registration ---------------------------------------------------------------------------------


def test_a_field_worker_registers_a_device_and_gets_a_token_once(demo: None) -> None:
    response = register({"username": "alice", "password": PASSWORD, "name": "Alice's phone", "platform": "android"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"device_id", "token"}
    device = Device.objects.get(pk=body["device_id"])
    assert device.user.username == "alice"
    assert (device.name, device.platform) == ("Alice's phone", "android")
    assert device.last_seen is None and device.revoked_at is None
    assert as_bearer(body["token"]).get("/api/v1/me").status_code == 200


def test_the_token_is_stored_only_as_a_hash(demo: None) -> None:
    token = register({"username": "alice", "password": PASSWORD, "name": "phone"}).json()["token"]
    secret = token.partition(".")[2]

    device = Device.objects.get()
    assert device.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in device.token_hash
    event = AuditEvent.objects.get(verb="device.registered")
    assert secret not in json.dumps(event.changes)


def test_a_compliance_officer_may_register_a_device(demo: None) -> None:
    response = register({"username": "olivia", "password": PASSWORD, "name": "Olivia's tablet", "platform": "ios"})
    assert response.status_code == 201, response.content


def test_two_registrations_get_two_devices_with_different_tokens(demo: None) -> None:
    first = register({"username": "alice", "password": PASSWORD, "name": "phone"}).json()
    second = register({"username": "alice", "password": PASSWORD, "name": "tablet"}).json()
    assert first["device_id"] != second["device_id"]
    assert first["token"] != second["token"]


def test_registration_writes_a_device_registered_audit_event(demo: None) -> None:
    body = register({"username": "alice", "password": PASSWORD, "name": "phone", "platform": "android"}).json()

    event = AuditEvent.objects.get(verb="device.registered")
    assert event.object_type == "device"
    assert event.object_id == body["device_id"]
    assert str(event.device_id) == body["device_id"]
    assert event.actor_username == "alice"
    assert event.source == "device"
    assert event.changes == {"name": [None, "phone"], "platform": [None, "android"]}


def test_it_rejects_a_wrong_password_with_invalid_credentials(demo: None) -> None:
    response = register({"username": "alice", "password": "nope", "name": "phone"})
    assert response.status_code == 401
    assert error_code(response) == "invalid_credentials"
    assert not Device.objects.exists()


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(demo: None) -> None:
    unknown = register({"username": "mallory", "password": PASSWORD, "name": "phone"})
    wrong = register({"username": "alice", "password": "nope", "name": "phone"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


def test_it_refuses_an_inactive_user_with_user_inactive(user: Callable[[str], User]) -> None:
    alice = user("alice")
    alice.is_active = False
    alice.save()

    response = register({"username": "alice", "password": PASSWORD, "name": "phone"})
    assert response.status_code == 403
    assert error_code(response) == "user_inactive"
    assert not Device.objects.exists()


@pytest.mark.parametrize("username", ["mark", "admin"])
def test_it_refuses_users_outside_the_device_roles(demo: None, username: str) -> None:
    response = register({"username": username, "password": PASSWORD, "name": "phone"})
    assert response.status_code == 403
    assert error_code(response) == "role_not_allowed"
    assert not Device.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": 5, "password": PASSWORD, "name": "phone"}, "username"),
        ({"username": "alice", "password": ["x"], "name": "phone"}, "password"),
        ({"username": "alice", "password": PASSWORD}, "name"),
        ({"username": "alice", "password": PASSWORD, "name": "phone", "platform": 7}, "platform"),
        ({"username": "alice", "password": PASSWORD, "name": "x" * 201}, "name"),
    ],
)
def test_it_rejects_missing_fields_and_wrong_types_naming_the_field(demo: None, body: Any, field: str) -> None:
    response = register(body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in error["fields"]
    assert not Device.objects.exists()


def test_it_rejects_a_body_that_is_not_an_object(demo: None) -> None:
    response = register(["alice", PASSWORD])
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"


@pytest.mark.parametrize(
    "raw",
    ['{"username": "alice", "password": ', '{"username": "alice", "username": "bob", "password": "x", "name": "n"}'],
)
def test_it_rejects_malformed_or_ambiguous_json(demo: None, raw: str) -> None:
    response = APIClient().post(REGISTER, raw, content_type="application/json")
    assert response.status_code == 400
    assert error_code(response) == "malformed_json"


def test_it_rejects_a_form_encoded_body(demo: None) -> None:
    response = APIClient().post(REGISTER, {"username": "alice", "password": PASSWORD, "name": "phone"})
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


# --- bearer authentication ------------------------------------------------------------------------


def test_a_request_without_a_token_gets_401_not_authenticated_with_a_challenge(db: None) -> None:
    response = APIClient().get("/api/v1/me")
    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="fieldsync"'


@pytest.mark.parametrize(
    "header",
    [
        "Bearer garbage",
        "Bearer not-a-uuid.secret",
        f"Bearer {uuid.uuid4().hex}.secret",
        "Bearer",
        "Bearer a b",
    ],
)
def test_a_garbage_token_gets_401_invalid_token(db: None, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_the_right_device_id_with_a_wrong_secret_gets_401(device_for: Callable[[str], DeviceClient]) -> None:
    alice = device_for("alice")
    secret = alice.token.partition(".")[2]
    forged = f"{alice.device_id.hex}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"

    for token in (forged, f"{alice.device_id.hex}.", alice.device_id.hex):
        response = as_bearer(token).get("/api/v1/me")
        assert response.status_code == 401, token
        assert error_code(response) == "invalid_token"
    assert Device.objects.get(pk=alice.device_id).last_seen is None


def test_a_device_of_a_deactivated_user_is_refused(device_for: Callable[[str], DeviceClient]) -> None:
    alice = device_for("alice")
    User.objects.filter(username="alice").update(is_active=False)
    response = alice.get("/api/v1/me")
    assert response.status_code == 401
    assert error_code(response) == "user_inactive"


def test_last_seen_is_set_on_first_use(device_for: Callable[[str], DeviceClient]) -> None:
    alice = device_for("alice")
    before = timezone.now()
    assert alice.get("/api/v1/me").status_code == 200
    last_seen = Device.objects.get(pk=alice.device_id).last_seen
    assert last_seen is not None and before <= last_seen <= timezone.now()


def test_last_seen_is_not_written_again_within_a_minute(device_for: Callable[[str], DeviceClient]) -> None:
    alice = device_for("alice")
    recently = timezone.now() - timedelta(seconds=30)
    Device.objects.filter(pk=alice.device_id).update(last_seen=recently)

    with CaptureQueriesContext(connection) as queries:
        assert alice.get("/api/v1/me").status_code == 200
        assert alice.get("/api/v1/me").status_code == 200

    assert Device.objects.get(pk=alice.device_id).last_seen == recently
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    assert writes == []


def test_last_seen_moves_on_once_a_minute_has_passed(device_for: Callable[[str], DeviceClient]) -> None:
    alice = device_for("alice")
    long_ago = timezone.now() - timedelta(minutes=2)
    Device.objects.filter(pk=alice.device_id).update(last_seen=long_ago)

    assert alice.get("/api/v1/me").status_code == 200
    last_seen = Device.objects.get(pk=alice.device_id).last_seen
    assert last_seen is not None and last_seen > long_ago + timedelta(minutes=1)


# --- /me ------------------------------------------------------------------------------------------


def test_me_returns_the_user_roles_device_and_teams(device_for: Callable[[str], DeviceClient]) -> None:
    alice = device_for("alice")
    body = alice.get("/api/v1/me").json()
    assert body["user"]["username"] == "alice"
    assert body["user"]["roles"] == ["Field workers"]
    assert body["device"] == {"id": str(alice.device_id), "name": "alice's phone", "platform": "android"}
    assert body["teams"] == [{"slug": "north", "name": "North depot"}]


def test_me_lists_every_team_of_an_officer(device_for: Callable[[str], DeviceClient]) -> None:
    body = device_for("olivia").get("/api/v1/me").json()
    assert body["user"]["roles"] == ["Compliance officers"]
    assert [team["slug"] for team in body["teams"]] == ["north", "south"]


# --- revocation through the admin -----------------------------------------------------------------


def revoke_in_admin(client: Client, *device_ids: uuid.UUID) -> Any:
    return client.post(
        "/admin/sync/device/",
        {"action": "revoke", "_selected_action": [str(d) for d in device_ids], "index": "0"},
    )


def test_the_admin_revoke_action_revokes_the_token(device_for: Callable[[str], DeviceClient]) -> None:
    alice = device_for("alice")
    bob = device_for("bob")
    assert alice.get("/api/v1/me").status_code == 200

    admin = admin_client("admin")
    assert b'value="revoke"' in admin.get("/admin/sync/device/").content
    response = revoke_in_admin(admin, alice.device_id)

    assert response.status_code == 302
    assert Device.objects.get(pk=alice.device_id).revoked_at is not None
    denied = alice.get("/api/v1/me")
    assert denied.status_code == 401
    assert error_code(denied) == "device_revoked"
    assert bob.get("/api/v1/me").status_code == 200, "only the selected device is revoked"


def test_revoking_writes_one_device_revoked_audit_event(device_for: Callable[[str], DeviceClient]) -> None:
    alice = device_for("alice")
    admin = admin_client("admin")

    revoke_in_admin(admin, alice.device_id)
    revoke_in_admin(admin, alice.device_id)  # already revoked: nothing more to journal

    event = AuditEvent.objects.get(verb="device.revoked")
    assert event.object_id == str(alice.device_id)
    assert event.actor_username == "admin"
    assert event.source == "admin"
    assert list(event.changes) == ["revoked_at"]


def test_a_device_registered_again_after_revocation_works(device_for: Callable[[str], DeviceClient]) -> None:
    old = device_for("alice")
    revoke_in_admin(admin_client("admin"), old.device_id)
    token = register({"username": "alice", "password": PASSWORD, "name": "new phone"}).json()["token"]
    assert as_bearer(token).get("/api/v1/me").status_code == 200
    assert old.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize("username", ["mark", "olivia"])
def test_managers_and_officers_cannot_revoke_devices(device_for: Callable[[str], DeviceClient], username: str) -> None:
    alice = device_for("alice")
    client = admin_client(username)
    changelist = client.get("/admin/sync/device/")
    assert changelist.status_code == 200
    assert b'value="revoke"' not in changelist.content

    revoke_in_admin(client, alice.device_id)
    assert Device.objects.get(pk=alice.device_id).revoked_at is None
    assert not AuditEvent.objects.filter(verb="device.revoked").exists()
