"""POST /api/v1/sync/push: idempotency, ordering, last-write-wins with clock correction, team
scoping, validation, and the rule that bad input gets a 4xx with a code and writes nothing.

Runs on SQLite and on MariaDB (the whole suite runs twice)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from records.models import Record, RecordVersion
from records.services import Actor, Change, apply_change
from sync.models import LedgerEntry
from tests.conftest import DeviceClient

PUSH = "/api/v1/sync/push"


def iso(moment: datetime) -> str:
    return moment.isoformat()


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


def stock(**fields: Any) -> dict[str, Any]:
    return {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each", **fields}


def create(
    record: str | None = None, data: dict[str, Any] | None = None, *, at: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "op": "create",
        "type": "stock_count",
        "record": record or str(uuid.uuid4()),
        "data": stock() if data is None else data,
        "captured_at": iso(at or ago(minutes=30)),
        **extra,
    }


def update(record: str, base: int, data: dict[str, Any], *, at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "op": "update",
        "type": "stock_count",
        "record": record,
        "base_version": base,
        "data": data,
        "captured_at": iso(at or ago(minutes=1)),
        **extra,
    }


def delete(record: str, base: int, *, at: datetime | None = None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "op": "delete",
        "type": "stock_count",
        "record": record,
        "base_version": base,
        "captured_at": iso(at or ago(minutes=1)),
    }


def results(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    return list(response.json()["results"])


def push_one(device: DeviceClient, action: dict[str, Any], sent_at: str | None = None) -> dict[str, Any]:
    [result] = results(device.push([action], sent_at=sent_at))
    return result


def row_counts() -> dict[str, int]:
    return {
        "records": Record.objects.count(),
        "versions": RecordVersion.objects.count(),
        "ledger": LedgerEntry.objects.count(),
        "audit": AuditEvent.objects.count(),
    }


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


@pytest.fixture
def alice(device_for: Any) -> DeviceClient:
    return device_for("alice")


@pytest.fixture
def bob(device_for: Any) -> DeviceClient:
    return device_for("bob")


@pytest.fixture
def carol(device_for: Any) -> DeviceClient:
    return device_for("carol")


# --- applying ---------------------------------------------------------------------------------


def test_it_applies_a_create_an_update_and_a_delete_with_versions(alice: DeviceClient) -> None:
    record = str(uuid.uuid4())
    got = results(
        alice.push(
            [
                create(record, at=ago(minutes=3)),
                update(record, 1, {"counted": 41}, at=ago(minutes=2)),
                delete(record, 2, at=ago(minutes=1)),
            ]
        )
    )

    assert [(r["status"], r["version"], r["error"], r["replayed"]) for r in got] == [
        ("applied", 1, None, False),
        ("applied", 2, None, False),
        ("applied", 3, None, False),
    ]
    assert got[0]["data"] == stock()
    assert got[1]["data"] == stock(counted=41)
    assert got[2]["data"] is None
    row = Record.objects.get(pk=record)
    assert (row.version, row.deleted, row.data) == (3, True, stock(counted=41))
    versions = RecordVersion.objects.filter(record=row).order_by("version")
    assert [(v.version, v.op, v.deleted, v.source) for v in versions] == [
        (1, "create", False, "device"),
        (2, "update", False, "device"),
        (3, "delete", True, "device"),
    ]
    assert [v.data["counted"] for v in versions] == [40, 41, 41]


def test_results_come_back_in_the_order_sent_and_a_bad_action_does_not_block_the_rest(alice: DeviceClient) -> None:
    actions = [create(), create(data=stock(counted=-1)), create(), create(type="no_such_type"), create()]

    got = results(alice.push(actions))

    assert [r["id"] for r in got] == [a["id"] for a in actions]
    assert [r["record"] for r in got] == [a["record"] for a in actions]
    assert [r["status"] for r in got] == ["applied", "rejected", "applied", "rejected", "applied"]
    assert Record.objects.count() == 3


def test_updates_in_one_batch_apply_in_the_order_sent(alice: DeviceClient) -> None:
    record = str(uuid.uuid4())
    at = ago(minutes=10)
    got = results(
        alice.push(
            [create(record, at=at)]
            + [update(record, n, {"counted": n * 10}, at=at + timedelta(seconds=n)) for n in range(1, 6)]
        )
    )

    assert [r["version"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert Record.objects.get(pk=record).data["counted"] == 50


# --- idempotency ------------------------------------------------------------------------------


def test_a_lost_response_retried_gets_the_same_result_and_one_row_per_action(alice: DeviceClient) -> None:
    record = str(uuid.uuid4())
    batch = [create(record, at=ago(minutes=5)), update(record, 1, {"counted": 7}), create(data={"sku": "x"})]

    first = results(alice.push(batch))
    counts = row_counts()
    # The device never saw the response; it retries the same actions later, with a new sent_at.
    again = results(alice.push(batch, sent_at=iso(timezone.now() + timedelta(seconds=30))))
    third = results(alice.push(batch))

    assert [r["replayed"] for r in first] == [False, False, False]
    assert [r["replayed"] for r in again] == [True, True, True]
    assert [{**r, "replayed": False} for r in again] == first
    assert third == again
    assert first[2]["status"] == "rejected"  # rejected results are final and replayed too
    assert row_counts() == counts
    assert Record.objects.filter(pk=record).count() == 1
    assert RecordVersion.objects.filter(record_id=record).count() == 2
    for action in batch:
        assert LedgerEntry.objects.filter(device_id=alice.device_id, action_id=action["id"]).count() == 1
        assert RecordVersion.objects.filter(action_id=action["id"]).count() == (0 if action is batch[2] else 1)
        assert AuditEvent.objects.filter(action_id=action["id"]).count() == (0 if action is batch[2] else 1)


def test_the_same_action_twice_in_one_batch_applies_once(alice: DeviceClient) -> None:
    action = create()

    got = results(alice.push([action, action]))

    assert [(r["status"], r["replayed"]) for r in got] == [("applied", False), ("applied", True)]
    assert Record.objects.count() == 1


def test_a_retried_batch_mixing_old_and_new_actions_replays_applies_and_counts_every_copy(
    alice: DeviceClient,
) -> None:
    # A retried batch is answered from the ledger in one read (sync.services._stored_answers);
    # what is new in it still applies in order, after what came before it.
    record = str(uuid.uuid4())
    old = create(record, at=ago(minutes=5))
    first = results(alice.push([old]))
    new = update(record, 1, {"counted": 7})
    reused = {**old, "data": stock(counted=999)}

    got = results(alice.push([old, new, old, reused]))

    assert [(r["status"], r["replayed"]) for r in got] == [
        ("applied", True),
        ("applied", False),
        ("applied", True),
        ("rejected", False),
    ]
    assert got[0] == got[2] == {**first[0], "replayed": True}
    assert got[1]["version"] == 2
    assert got[3]["error"]["code"] == "idempotency_key_reused"
    assert Record.objects.get(pk=record).data == stock(counted=7)
    entry = LedgerEntry.objects.get(device_id=alice.device_id, action_id=old["id"])
    assert entry.replays == 2
    assert entry.last_replayed_at is not None


def test_it_rejects_a_reused_action_id_with_another_payload_and_changes_nothing(alice: DeviceClient) -> None:
    action = create()
    original = push_one(alice, action)
    counts = row_counts()

    reused = push_one(alice, {**action, "data": stock(counted=999)})

    assert reused["status"] == "rejected"
    assert reused["error"]["code"] == "idempotency_key_reused"
    assert reused["replayed"] is False
    assert row_counts() == counts
    assert Record.objects.get(pk=action["record"]).data == stock()
    # The action id still answers with its original result.
    assert push_one(alice, action) == {**original, "replayed": True}
    assert alice.get(f"/api/v1/sync/actions/{action['id']}").json() == original


def test_an_update_of_a_record_whose_create_was_rejected_earlier_in_the_batch_is_create_rejected(
    alice: DeviceClient,
) -> None:
    record = str(uuid.uuid4())

    got = results(
        alice.push([create(record, data=stock(counted="lots")), update(record, 1, {"counted": 3}), delete(record, 1)])
    )

    assert [r["status"] for r in got] == ["rejected", "rejected", "rejected"]
    assert [r["error"]["code"] for r in got] == ["schema_violation", "create_rejected", "create_rejected"]
    assert not Record.objects.filter(pk=record).exists()
    assert LedgerEntry.objects.filter(error_code="create_rejected").count() == 2


def test_a_create_for_an_existing_id_never_makes_a_second_row(
    alice: DeviceClient, bob: DeviceClient, carol: DeviceClient
) -> None:
    record = str(uuid.uuid4())
    push_one(alice, create(record))

    again = push_one(bob, create(record, data=stock(counted=1)))
    outsider = push_one(carol, create(record, data=stock(counted=2)))

    assert (again["status"], again["error"]["code"]) == ("rejected", "record_exists")
    # A team-mate gets the server's state to adopt; an outsider learns nothing about it.
    assert (again["version"], again["data"]) == (1, stock())
    assert (outsider["error"]["code"], outsider["version"], outsider["data"]) == ("record_exists", None, None)
    assert Record.objects.filter(pk=record).count() == 1
    assert Record.objects.get(pk=record).data == stock()
    assert RecordVersion.objects.filter(record_id=record).count() == 1


def test_a_delete_leaves_a_tombstone_that_pull_returns(alice: DeviceClient, bob: DeviceClient) -> None:
    record = str(uuid.uuid4())
    push_one(alice, create(record))

    deleted = push_one(alice, delete(record, 1))
    edit = push_one(bob, update(record, 1, {"counted": 5}))

    assert (deleted["status"], deleted["version"], deleted["data"]) == ("applied", 2, None)
    assert Record.objects.filter(pk=record, deleted=True).exists()
    [change] = bob.pull().json()["changes"]
    assert (change["record"], change["deleted"], change["data"], change["version"]) == (record, True, None, 2)
    assert (edit["status"], edit["error"]["code"]) == ("rejected", "record_deleted")


# --- last write wins --------------------------------------------------------------------------


@pytest.fixture
def counted_by_bob(alice: DeviceClient, bob: DeviceClient) -> str:
    """A stock count alice created; bob then recounted it (captured 10 minutes ago): version 2."""
    record = str(uuid.uuid4())
    push_one(alice, create(record, at=ago(hours=1)))
    assert push_one(bob, update(record, 1, {"counted": 50}, at=ago(minutes=10)))["version"] == 2
    return record


def test_a_stale_update_captured_later_wins(alice: DeviceClient, counted_by_bob: str) -> None:
    result = push_one(alice, update(counted_by_bob, 1, {"counted": 60}, at=ago(minutes=5)))

    assert (result["status"], result["version"], result["data"]["counted"]) == ("applied", 3, 60)
    assert Record.objects.get(pk=counted_by_bob).data["counted"] == 60


def test_a_stale_update_captured_earlier_loses_and_gets_the_servers_state(
    alice: DeviceClient, counted_by_bob: str
) -> None:
    counts = row_counts()

    result = push_one(alice, update(counted_by_bob, 1, {"counted": 30}, at=ago(minutes=20)))

    assert result["status"] == "rejected"
    assert result["error"]["code"] == "conflict_lost"
    assert "data.counted" in result["error"]["fields"]
    # What the device adopts: the server's current version and data.
    assert (result["version"], result["data"]) == (2, stock(counted=50))
    assert Record.objects.get(pk=counted_by_bob).version == 2
    assert {k: v - counts[k] for k, v in row_counts().items()} == {"records": 0, "versions": 0, "ledger": 1, "audit": 0}
    assert LedgerEntry.objects.get(action_id=result["id"]).error_code == "conflict_lost"


def test_a_stale_delete_captured_earlier_loses(alice: DeviceClient, counted_by_bob: str) -> None:
    result = push_one(alice, delete(counted_by_bob, 1, at=ago(minutes=20)))

    assert (result["status"], result["error"]["code"], result["version"]) == ("rejected", "conflict_lost", 2)
    assert not Record.objects.get(pk=counted_by_bob).deleted


def test_a_device_clock_two_hours_behind_wins_with_a_later_real_capture(
    alice: DeviceClient, counted_by_bob: str
) -> None:
    # Alice's clock says 2 hours less than the truth, in sent_at and captured_at alike. Her edit
    # really happened 5 minutes ago, after bob's (10 minutes ago); read raw, it looks 2 hours old.
    skew = timedelta(hours=2)
    really = ago(minutes=5)

    result = push_one(
        alice, update(counted_by_bob, 1, {"counted": 60}, at=really - skew), sent_at=iso(timezone.now() - skew)
    )

    assert (result["status"], result["version"]) == ("applied", 3)
    entry = LedgerEntry.objects.get(action_id=result["id"])
    assert abs(entry.clock_offset_ms - skew / timedelta(milliseconds=1)) < 60_000
    assert abs(Record.objects.get(pk=counted_by_bob).captured_at - really) < timedelta(minutes=1)


def test_a_correct_clock_loses_to_a_later_real_capture_from_a_device_two_hours_behind(
    alice: DeviceClient, bob: DeviceClient
) -> None:
    skew = timedelta(hours=2)
    record = str(uuid.uuid4())
    push_one(bob, create(record, at=ago(hours=1)))
    # Alice (clock 2 hours behind) counted 5 minutes ago; bob (correct clock) 10 minutes ago but
    # from a stale base. Uncorrected, alice's capture would look older and bob would win.
    alice_edit = update(record, 1, {"counted": 60}, at=ago(minutes=5) - skew)
    assert push_one(alice, alice_edit, sent_at=iso(timezone.now() - skew))["version"] == 2

    result = push_one(bob, update(record, 1, {"counted": 50}, at=ago(minutes=10)))

    assert (result["status"], result["error"]["code"]) == ("rejected", "conflict_lost")
    assert (result["version"], result["data"]["counted"]) == (2, 60)
    assert Record.objects.get(pk=record).data["counted"] == 60


def test_a_capture_time_after_the_push_arrived_counts_as_the_arrival_time(
    alice: DeviceClient, counted_by_bob: str
) -> None:
    result = push_one(alice, update(counted_by_bob, 1, {"counted": 60}, at=timezone.now() + timedelta(days=365)))

    assert result["status"] == "applied"
    assert Record.objects.get(pk=counted_by_bob).captured_at <= timezone.now()


@pytest.mark.parametrize(
    ("sent_at", "captured_at"),
    [("0001-01-01T00:00:00Z", "9999-12-30T00:00:00Z"), ("9999-12-30T00:00:00Z", "0001-01-02T00:00:00Z")],
    ids=["clock-far-behind", "clock-far-ahead"],
)
def test_a_clock_thousands_of_years_off_is_clamped_not_a_server_error(
    alice: DeviceClient, sent_at: str, captured_at: str
) -> None:
    result = push_one(alice, {**create(), "captured_at": captured_at}, sent_at=sent_at)

    assert result["status"] == "applied"


def test_equal_capture_times_are_broken_by_the_larger_action_id(user: Any) -> None:
    # Over HTTP two pushes never get the same receive time, so the corrected capture times are
    # never exactly equal; this drives the service the push calls with the times made equal.
    alice = Actor.for_device(user=user("alice"), device_id=uuid.uuid4())
    bob = Actor.for_device(user=user("bob"), device_id=uuid.uuid4())
    at = ago(minutes=10)
    record = uuid.uuid4()
    low, mid, high = (uuid.UUID(int=n << 64) for n in (1, 2, 3))

    def edit(actor: Actor, action_id: uuid.UUID, counted: int) -> Any:
        return apply_change(
            actor=actor,
            change=Change(
                op="update",
                record_id=record,
                type_key="stock_count",
                data={"counted": counted},
                captured_at=at,
                base_version=1,
                action_id=action_id,
            ),
        )

    apply_change(
        actor=alice,
        change=Change(
            op="create", record_id=record, type_key="stock_count", data=stock(), captured_at=at - timedelta(1)
        ),
    )
    assert edit(bob, mid, 50).version == 2

    smaller = edit(alice, low, 30)
    larger = edit(alice, high, 60)

    assert (smaller.status, smaller.error and smaller.error.code) == ("rejected", "conflict_lost")
    assert (larger.status, larger.version) == ("applied", 3)
    assert Record.objects.get(pk=record).data["counted"] == 60


# --- teams, types, schemas --------------------------------------------------------------------


def test_a_field_worker_cannot_create_into_another_team(alice: DeviceClient) -> None:
    result = push_one(alice, create(team="south"))

    assert (result["status"], result["error"]["code"]) == ("rejected", "team_forbidden")
    assert result["error"]["fields"] == {"team": ["Not one of your teams."]}
    assert not Record.objects.exists()


def test_a_create_into_an_unknown_team_is_rejected(alice: DeviceClient) -> None:
    result = push_one(alice, create(team="atlantis"))

    assert (result["status"], result["error"]["code"]) == ("rejected", "unknown_team")
    assert not Record.objects.exists()


def test_a_create_without_a_team_goes_to_the_users_only_team(alice: DeviceClient) -> None:
    result = push_one(alice, create())

    assert Record.objects.get(pk=result["record"]).team.slug == "north"


def test_a_field_worker_cannot_update_or_delete_another_teams_record(alice: DeviceClient, carol: DeviceClient) -> None:
    record = str(uuid.uuid4())
    push_one(carol, create(record))
    counts = row_counts()

    edited = push_one(alice, update(record, 1, {"counted": 1}))
    deleted = push_one(alice, delete(record, 1))

    for result in (edited, deleted):
        assert (result["status"], result["error"]["code"]) == ("rejected", "record_not_found")
        assert (result["version"], result["data"]) == (None, None)  # nothing about it leaks
    assert Record.objects.get(pk=record).data == stock()
    assert Record.objects.get(pk=record).version == 1
    assert row_counts()["versions"] == counts["versions"]


def test_an_unknown_record_type_is_rejected(alice: DeviceClient) -> None:
    result = push_one(alice, create(type="spaceship"))

    assert (result["status"], result["error"]["code"]) == ("rejected", "unknown_type")
    assert result["error"]["fields"] == {"type": ["Unknown record type."]}


def test_schema_violations_are_reported_per_field_path(alice: DeviceClient) -> None:
    data = {"location": "A1", "counted": "forty", "unit": "each", "colour": "red"}

    result = push_one(alice, create(data=data))

    assert (result["status"], result["error"]["code"]) == ("rejected", "schema_violation")
    fields = result["error"]["fields"]
    assert set(fields) == {"data.counted", "data.sku", "data.colour"}
    assert fields["data.sku"] == ["This field is required."]
    assert fields["data.colour"] == ["Unknown field."]
    assert not Record.objects.exists()


def test_an_update_that_breaks_the_schema_is_rejected_with_its_path(alice: DeviceClient) -> None:
    record = str(uuid.uuid4())
    push_one(alice, create(record))

    result = push_one(alice, update(record, 1, {"counted": -3}))

    assert (result["status"], result["error"]["code"]) == ("rejected", "schema_violation")
    assert list(result["error"]["fields"]) == ["data.counted"]
    assert Record.objects.get(pk=record).version == 1


# --- whole-request errors: 4xx with a code, nothing written -----------------------------------


def body_with(action_changes: dict[str, Any]) -> str:
    """A push whose first action is fine and whose second has the given change."""
    return json.dumps(
        {"sent_at": iso(timezone.now()), "actions": [create(), {**create(), **action_changes}]}, allow_nan=True
    )


NESTED = "[" * 100 + "]" * 100
BAD_BODIES = {
    "malformed": ("{'sent_at': nope", 400, "malformed_json", None),
    "truncated": (body_with({})[:-7], 400, "malformed_json", None),
    "not-utf8": (b'{"sent_at": "\xff\xfe"}', 400, "malformed_json", None),
    "empty-object": ("{}", 400, "invalid_request", "sent_at"),
    "a-list": (f"[{body_with({})}]", 400, "invalid_request", None),
    "a-string": ('"push"', 400, "invalid_request", None),
    "null": ("null", 400, "invalid_request", None),
    "action-id-a-number": (body_with({"id": 5}), 400, "invalid_request", "actions.1.id"),
    "action-id-not-a-uuid": (body_with({"id": "action-1"}), 400, "invalid_request", "actions.1.id"),
    "action-id-in-braces": (body_with({"id": "{" + str(uuid.uuid4()) + "}"}), 400, "invalid_request", "actions.1.id"),
    "record-id-not-a-uuid": (body_with({"record": "42"}), 400, "invalid_request", "actions.1.record"),
    "record-id-null": (body_with({"record": None}), 400, "invalid_request", "actions.1.record"),
    "base-version-string": (
        body_with({"op": "update", "base_version": "3"}),
        400,
        "invalid_request",
        "actions.1.base_version",
    ),
    "base-version-float": (
        body_with({"op": "update", "base_version": 3.5}),
        400,
        "invalid_request",
        "actions.1.base_version",
    ),
    "base-version-bool": (
        body_with({"op": "update", "base_version": True}),
        400,
        "invalid_request",
        "actions.1.base_version",
    ),
    "base-version-zero": (body_with({"op": "update", "base_version": 0}), 400, "invalid_request", None),
    "update-without-base-version": (body_with({"op": "update"}), 400, "invalid_request", "actions.1.base_version"),
    "unknown-op": (body_with({"op": "upsert"}), 400, "invalid_request", "actions.1.op"),
    "type-a-number": (body_with({"type": 7}), 400, "invalid_request", "actions.1.type"),
    "data-a-list": (body_with({"data": [1, 2]}), 400, "invalid_request", "actions.1.data"),
    "captured-at-garbage": (body_with({"captured_at": "yesterday"}), 400, "invalid_request", "actions.1.captured_at"),
    "missing-sent-at": (json.dumps({"actions": [create()]}), 400, "invalid_request", "sent_at"),
    "nan": (body_with({"data": stock(counted=float("nan"))}), 400, "malformed_json", None),
    "infinity": (body_with({"data": stock(counted=float("inf"))}), 400, "malformed_json", None),
    "duplicate-keys": (body_with({})[:-2] + ', "sent_at": "2026-01-01T00:00:00Z"}', 400, "malformed_json", None),
    "nested-too-deep": (body_with({"data": "NESTED"}).replace('"NESTED"', NESTED), 400, "malformed_json", None),
    "nested-past-the-recursion-limit": (
        body_with({"data": "NESTED"}).replace('"NESTED"', "[" * 5000 + "]" * 5000),
        400,
        "malformed_json",
        None,
    ),
}


@pytest.mark.parametrize(("raw", "status", "code", "field"), list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_a_structurally_bad_push_gets_a_4xx_with_a_code_and_writes_nothing(
    alice: DeviceClient, raw: str | bytes, status: int, code: str, field: str | None
) -> None:
    counts = row_counts()

    response = alice.generic("POST", PUSH, raw, content_type="application/json")

    assert response.status_code == status, response.content
    error = error_of(response)
    assert error["code"] == code
    assert error["message"]
    if field:
        assert field in error["fields"], error
    assert row_counts() == counts


def test_more_than_500_actions_is_413_too_many_actions(alice: DeviceClient) -> None:
    counts = row_counts()

    response = alice.push([create() for _ in range(501)])

    assert response.status_code == 413
    assert error_of(response)["code"] == "too_many_actions"
    assert row_counts() == counts


def test_500_actions_are_accepted(alice: DeviceClient) -> None:
    got = results(alice.push([create() for _ in range(500)]))

    assert len(got) == 500
    assert Record.objects.count() == 500


def test_a_body_over_5_mb_is_413_payload_too_large(alice: DeviceClient) -> None:
    counts = row_counts()

    # Under the action limit, over the byte limit.
    response = alice.push([create(data=stock(note="x" * 14_000)) for _ in range(400)])

    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert row_counts() == counts


def test_a_push_needs_a_device_token(alice: DeviceClient) -> None:
    anonymous = DeviceClient()
    response = anonymous.post(PUSH, {"sent_at": iso(timezone.now()), "actions": [create()]}, format="json")

    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"
    assert not Record.objects.exists()


# --- action results are per device ------------------------------------------------------------


def test_a_device_reads_its_own_action_result(alice: DeviceClient) -> None:
    action = create()
    pushed = push_one(alice, action)

    response = alice.get(f"/api/v1/sync/actions/{action['id']}")

    assert response.status_code == 200
    assert response.json() == pushed


def test_another_devices_action_id_is_not_found(device_for: Any, alice: DeviceClient, bob: DeviceClient) -> None:
    action = create()
    push_one(alice, action)
    alices_tablet = device_for("alice")  # keys are scoped per device, not per user

    response = bob.get(f"/api/v1/sync/actions/{action['id']}")

    assert response.status_code == 404
    assert error_of(response)["code"] == "action_not_found"
    assert alices_tablet.get(f"/api/v1/sync/actions/{action['id']}").status_code == 404
    assert alice.get(f"/api/v1/sync/actions/{uuid.uuid4()}").status_code == 404


def test_pushing_another_devices_action_id_does_not_return_its_result(alice: DeviceClient, bob: DeviceClient) -> None:
    alices = create()
    alices_result = push_one(alice, alices)

    bobs = push_one(bob, {**create(), "id": alices["id"]})

    assert bobs["replayed"] is False
    assert bobs["status"] == "applied"
    assert bobs["record"] != alices_result["record"]
    assert Record.objects.count() == 2
    assert LedgerEntry.objects.filter(action_id=alices["id"]).count() == 2


# --- the journal ------------------------------------------------------------------------------


def test_every_applied_action_has_exactly_one_audit_event_and_the_chain_verifies(
    alice: DeviceClient, bob: DeviceClient
) -> None:
    record = str(uuid.uuid4())
    batch = [
        create(record, at=ago(minutes=5)),
        update(record, 1, {"counted": 12}, at=ago(minutes=4)),
        create(data={"sku": "incomplete"}),
        delete(record, 2, at=ago(minutes=3)),
    ]
    got = results(alice.push(batch))
    results(alice.push(batch))  # replays add nothing to the journal
    push_one(bob, update(record, 1, {"counted": 99}, at=ago(minutes=30)))  # loses: no event

    verbs = {"create": "record.created", "update": "record.updated", "delete": "record.deleted"}
    for action, result in zip(batch, got, strict=True):
        events = AuditEvent.objects.filter(action_id=action["id"])
        if result["status"] == "rejected":
            assert not events.exists()
            continue
        [event] = events
        assert (event.verb, event.source, event.device_id) == (verbs[action["op"]], "device", alice.device_id)
        assert (event.object_type, event.object_id, event.team) == ("record", record, "north")
        assert event.actor_username == "alice"
    row = Record.objects.get(pk=record)
    assert row.change_seq == AuditEvent.objects.get(action_id=batch[3]["id"]).seq
    assert AuditEvent.objects.get(action_id=batch[1]["id"]).changes == {"counted": [40, 12]}
    assert AuditEvent.objects.filter(verb__startswith="record.").count() == 3

    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "audit chain ok" in out.getvalue()


def test_the_ledger_purge_deletes_only_expired_entries_in_batches(device_for: Any) -> None:
    from datetime import timedelta

    from sync.models import Device, LedgerEntry
    from sync.services import purge_expired_ledger_entries
    from tests.conftest import ledger_entries

    device = Device.objects.get(pk=device_for("alice").device_id)
    ledger_entries(device, age=timedelta(days=91), count=5)
    fresh = ledger_entries(device, age=timedelta(days=89), count=2)
    assert purge_expired_ledger_entries(batch_size=2) == 5
    assert sorted(LedgerEntry.objects.values_list("pk", flat=True)) == sorted(fresh)
