"""Building reviews the way they arise in the field: through devices pushing conflicting edits.

The standard conflict: alice creates an inspection (v1) and edits it from v1 (-> v2: odometer and
inspector); bob, still on v1, edits the odometer and the verdict. `passed` has the review policy,
so bob's edit waits for an officer; the review classifies odometer_km as changed on both sides,
passed as device only and inspector as server only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group, User
from django.utils import timezone

from approvals.models import Review
from records.models import RecordType
from records.roles import COMPLIANCE_OFFICERS
from tests.conftest import DeviceClient

INSPECTION: dict[str, Any] = {
    "vehicle": "VAN-12",
    "inspector": "Alice",
    "odometer_km": 1000,
    "checklist": [{"item": "brakes", "ok": True}, {"item": "lights", "ok": True}],
    "passed": True,
}

PERMIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string", "minLength": 1}, "hours": {"type": "integer", "minimum": 0}},
    "required": ["title"],
    "additionalProperties": False,
}


def push_one(device: DeviceClient, **action: Any) -> dict[str, Any]:
    """Push one action (an id and capture time are filled in) and return its result."""
    body = {"id": str(uuid.uuid4()), "captured_at": timezone.now().isoformat(), **action}
    body["record"] = str(body["record"])
    response = device.push([body])
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    return result


def create(device: DeviceClient, type_key: str, data: dict[str, Any], team: str = "north") -> uuid.UUID:
    record = uuid.uuid4()
    result = push_one(device, op="create", type=type_key, record=record, team=team, data=data)
    assert result["status"] in ("applied", "pending_review"), result
    return record


def update(device: DeviceClient, record: uuid.UUID, base_version: int, data: dict[str, Any]) -> dict[str, Any]:
    return push_one(device, op="update", type="inspection", record=record, base_version=base_version, data=data)


@dataclass(frozen=True)
class Conflict:
    record: uuid.UUID
    review: Review
    bob: DeviceClient
    action_id: str  # bob's action, the one that waits


def inspection_conflict(device_for: Callable[[str], DeviceClient], *, both_changed: bool = True) -> Conflict:
    """A pending review of bob's edit of an inspection that alice edited first (record at v2).
    With `both_changed=False` bob changes only the verdict, so no field is changed on both sides."""
    alice, bob = device_for("alice"), device_for("bob")
    record = create(alice, "inspection", INSPECTION)
    assert update(alice, record, 1, {"odometer_km": 1200, "inspector": "Alice A."})["version"] == 2
    proposal: dict[str, Any] = {"passed": False}
    if both_changed:
        proposal["odometer_km"] = 1250
    result = update(bob, record, 1, proposal)
    assert result["status"] == "pending_review", result
    return Conflict(record=record, review=Review.objects.get(pk=result["review"]), bob=bob, action_id=result["id"])


def review_all_type(key: str = "permit") -> RecordType:
    """A record type whose every device edit waits for approval."""
    return RecordType.objects.create(key=key, name=key.title(), schema=PERMIT_SCHEMA, conflict_policy="review_all")


def second_officer(username: str = "oscar") -> User:
    officer = User.objects.create_user(username=username, password="fieldsync-demo", is_staff=True)
    officer.groups.add(Group.objects.get(name=COMPLIANCE_OFFICERS))
    return officer
