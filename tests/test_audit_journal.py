"""Invariant 8: every applied action is in the journal, written in the transaction of the change.

Coverage is checked from the ledger's side (every action a device got "applied", "merged" or
"pending_review" for has its event, with its device and action id) and from the journal's side
(every verb the services write). Same-transaction is checked by making the journal write fail:
the change it would have journalled must not be there either."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone

import approvals.services
import records.batch
import records.services
import sync.services
from approvals.models import Review, ReviewState
from approvals.services import decide_review
from audit.models import AuditEvent
from records.models import Record
from sync.models import Device, LedgerEntry
from sync.services import register_device, revoke_device
from tests.reviewing import INSPECTION, create, inspection_conflict, push_one, update

STOCK = {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"}


class JournalDown(Exception):
    pass


def journal_fails(*args: Any, **kwargs: Any) -> None:
    raise JournalDown


def verbs() -> list[str]:
    return list(AuditEvent.objects.order_by("seq").values_list("verb", flat=True))


def test_every_device_action_that_changed_something_or_waits_has_its_event(device_for, user) -> None:
    alice = device_for("alice")
    record = create(alice, "stock_count", STOCK)
    push_one(alice, op="update", type="stock_count", record=record, base_version=1, data={"counted": 41})
    push_one(alice, op="update", type="stock_count", record=record, base_version=2, data={"counted": 41})
    push_one(alice, op="update", type="stock_count", record=record, base_version=2, data={"counted": "many"})
    push_one(alice, op="delete", type="stock_count", record=record, base_version=2, data={})
    conflict = inspection_conflict(device_for)
    decide_review(
        review_id=conflict.review.id,
        officer=user("olivia"),
        decision="approve",
        seen_version=2,
        choices={"odometer_km": "device"},
    )

    entries = list(LedgerEntry.objects.all())
    assert {e.status for e in entries} >= {"applied", "pending_review", "rejected"}
    for entry in entries:
        events = AuditEvent.objects.filter(action_id=entry.action_id, device_id=entry.device_id)
        if entry.status == "rejected":
            assert not events.exists(), f"a rejected action changed nothing, so journals nothing: {entry}"
        else:
            assert events.exists(), f"no journal event for {entry.status} action {entry.action_id}"
    decided = AuditEvent.objects.get(verb="review.decided")
    assert decided.action_id == uuid.UUID(conflict.action_id)
    assert decided.actor_username == "olivia"
    assert decided.source == "approval"
    applied = AuditEvent.objects.get(verb="record.updated", source="approval")
    assert applied.changes == {"odometer_km": [1200, 1250], "passed": [True, False]}


def test_the_journal_names_actor_device_source_object_action_and_both_times(device_for) -> None:
    alice = device_for("alice")
    action = uuid.uuid4()
    record = uuid.uuid4()
    captured = "2026-11-20T08:00:00+00:00"
    alice.push(
        [
            {
                "id": str(action),
                "op": "create",
                "type": "stock_count",
                "record": str(record),
                "data": STOCK,
                "captured_at": captured,
            }
        ],
        sent_at=captured,
    )

    event = AuditEvent.objects.get(verb="record.created")
    assert event.actor_username == "alice"
    assert event.device_id == alice.device_id
    assert event.source == "device"
    assert (event.object_type, event.object_id) == ("record", str(record))
    assert event.action_id == action
    assert event.record_type == "stock_count"
    assert event.team == "north"
    assert event.recorded_at >= event.occurred_at
    assert event.changes["counted"] == [None, 40]
    assert event.request_id


def test_each_service_verb_is_journalled(device_for, user) -> None:
    alice = device_for("alice")
    record = create(alice, "stock_count", STOCK)
    push_one(alice, op="update", type="stock_count", record=record, base_version=1, data={"counted": 41})
    push_one(alice, op="update", type="stock_count", record=record, base_version=2, data={"counted": 41})
    push_one(alice, op="delete", type="stock_count", record=record, base_version=2, data={})
    conflict = inspection_conflict(device_for)
    decide_review(review_id=conflict.review.id, officer=user("olivia"), decision="reject", seen_version=2, note="no")
    revoke_device(device=Device.objects.get(pk=alice.device_id), by=user("olivia"))

    assert set(verbs()) >= {
        "device.registered",
        "device.revoked",
        "record.created",
        "record.updated",
        "record.unchanged",
        "record.deleted",
        "review.opened",
        "review.decided",
    }
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert f"{len(verbs())} events verified" in out.getvalue()


def test_a_merge_is_journalled_as_merged(device_for) -> None:
    alice, bob = device_for("alice"), device_for("bob")
    record = create(alice, "inspection", INSPECTION)
    update(alice, record, 1, {"inspector": "Alice A."})
    result = update(bob, record, 1, {"odometer_km": 1300})
    assert result["status"] == "merged", result
    event = AuditEvent.objects.get(verb="record.merged")
    assert event.changes == {"odometer_km": [1000, 1300]}
    assert event.actor_username == "bob"


# --- one transaction: a journal that cannot be written means no change ----------------------


def test_a_device_write_whose_journal_entry_fails_leaves_no_record_and_no_ledger_row(device_for, monkeypatch) -> None:
    alice = device_for("alice")
    monkeypatch.setattr(records.services, "record_event", journal_fails)
    record = uuid.uuid4()
    action = {
        "id": str(uuid.uuid4()),
        "op": "create",
        "type": "stock_count",
        "record": str(record),
        "data": STOCK,
        "captured_at": timezone.now().isoformat(),
    }

    with pytest.raises(JournalDown):
        alice.push([action])

    assert not Record.objects.filter(pk=record).exists()
    assert not LedgerEntry.objects.filter(action_id=action["id"]).exists()


def test_a_batch_whose_journal_entries_fail_leaves_none_of_its_records_or_ledger_rows(device_for, monkeypatch) -> None:
    """A push of several actions stages its events and appends them at the end
    (records/batch.py): if that append fails, the whole batch rolls back with it."""
    alice = device_for("alice")
    monkeypatch.setattr(records.batch, "append_staged", journal_fails)
    actions = [
        {
            "id": str(uuid.uuid4()),
            "op": "create",
            "type": "stock_count",
            "record": str(uuid.uuid4()),
            "data": STOCK,
            "captured_at": timezone.now().isoformat(),
        }
        for _ in range(3)
    ]

    with pytest.raises(JournalDown):
        alice.push(actions)

    assert not Record.objects.filter(pk__in=[a["record"] for a in actions]).exists()
    assert not LedgerEntry.objects.filter(device_id=alice.device_id).exists()
    assert not AuditEvent.objects.filter(action_id__in=[a["id"] for a in actions]).exists()


def test_a_review_whose_journal_entry_fails_is_not_opened(device_for, monkeypatch) -> None:
    alice, bob = device_for("alice"), device_for("bob")
    record = create(alice, "inspection", INSPECTION)
    update(alice, record, 1, {"odometer_km": 1200})
    # review.opened is written through records.services.journal, beside the record events.
    monkeypatch.setattr(records.services, "record_event", journal_fails)

    with pytest.raises(JournalDown):
        update(bob, record, 1, {"odometer_km": 1250, "passed": False})

    assert not Review.objects.exists()
    assert LedgerEntry.objects.filter(device_id=bob.device_id).count() == 0


def test_a_decision_whose_journal_entry_fails_is_not_taken(device_for, user, monkeypatch) -> None:
    conflict = inspection_conflict(device_for)
    monkeypatch.setattr(approvals.services, "record_event", journal_fails)

    with pytest.raises(JournalDown):
        decide_review(
            review_id=conflict.review.id,
            officer=user("olivia"),
            decision="approve",
            seen_version=2,
            choices={"odometer_km": "device"},
        )

    conflict.review.refresh_from_db()
    assert conflict.review.state == ReviewState.PENDING
    assert Record.objects.get(pk=conflict.record).version == 2


def test_device_registration_and_revocation_are_journalled_or_not_done(demo, monkeypatch) -> None:
    alice = User.objects.get(username="alice")
    monkeypatch.setattr(sync.services, "record_event", journal_fails)
    with pytest.raises(JournalDown):
        register_device(user=alice, name="phone", platform="android")
    assert not Device.objects.exists()

    monkeypatch.undo()
    device, _ = register_device(user=alice, name="phone", platform="android")
    monkeypatch.setattr(sync.services, "record_event", journal_fails)
    with pytest.raises(JournalDown):
        revoke_device(device=device, by=User.objects.get(username="olivia"))
    device.refresh_from_db()
    assert device.revoked_at is None
