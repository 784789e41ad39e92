"""A push's new actions are applied in one transaction with their writes staged and written by a
few multi-row statements (records/batch.py, sync.services._push_batch); the chain head is locked
only at the end. These tests hold the batch path to what the per-action path does, and to its
own promises: a fixed number of statements, a database refusal that falls back to action by
action, and a feed lock that other devices never wait a whole batch for.

Runs on SQLite and on MariaDB; the lock test needs MariaDB (row locks)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError, connection
from django.test.utils import CaptureQueriesContext

from approvals.models import Review
from audit.models import AuditEvent
from audit.services import BrokenLink, verify_chain
from records import batch as records_batch
from records import services as record_services
from records.models import Record, RecordType, RecordVersion
from sync import services as sync_services
from sync.models import LedgerEntry
from tests.concurrency import JOIN_SECONDS
from tests.test_sync_push import ago, create, delete, results, stock, update


def job(**fields: Any) -> dict[str, Any]:
    return {"title": "Pump", "site": "Mine 3", "status": "open", **fields}


def scenario() -> list[list[dict[str, Any]]]:
    """Steps of actions that exercise every outcome a push can have, some depending on earlier
    steps of the same push: creates, updates of a record created in the batch, a stale update
    that merges, one that loses, a rejected create and the update that follows it, a delete, a
    repeated edit that changes nothing, and an unknown record type."""
    a, b, c, d = (str(uuid.uuid4()) for _ in range(4))
    return [
        [create(a), create(b, stock(counted=-1))],  # b breaks the schema (counted >= 0)
        [update(a, 1, {"counted": 41})],
        [update(b, 1, {"counted": 2})],  # create_rejected
        [create(c, job(), type="job_card")],
        [update(c, 1, {"status": "in_progress"}, type="job_card")],
        [update(c, 1, {"hours": 3}, type="job_card")],  # stale: merged
        [update(a, 1, {"counted": 7}, at=ago(hours=3))],  # stale and older: conflict_lost
        [update(a, 2, {"counted": 41})],  # the same value again: unchanged
        [create(d), delete(d, 1)],
        [{**create(), "type": "no_such_type"}],
    ]


def outline(result: dict[str, Any]) -> tuple[Any, ...]:
    return (
        result["status"],
        result["version"],
        result["data"],
        (result["error"] or {}).get("code"),
        result["replayed"],
        result["review"] is not None,
    )


def test_a_batch_gives_the_same_results_and_rows_as_a_transaction_per_action(device_for: Any, monkeypatch: Any) -> None:
    actions = [action for step in scenario() for action in step]
    with monkeypatch.context() as patch:
        patch.setattr(sync_services, "_push_batch", lambda **kwargs: {})  # the per-action path
        singly = [outline(r) for r in results(device_for("alice").push(actions))]
    records_before = {r.pk: (r.version, r.deleted, r.data) for r in Record.objects.all()}
    assert len(records_before) == 3
    Record.objects.all().delete()

    # The same actions (new action ids) from another device, through the batch path.
    together = [outline(r) for r in results(device_for("bob").push([{**a, "id": str(uuid.uuid4())} for a in actions]))]
    assert together == singly
    assert {r.pk: (r.version, r.deleted, r.data) for r in Record.objects.all()} == records_before
    assert [x[0] for x in together] == [
        "applied",
        "rejected",
        "applied",
        "rejected",
        "applied",
        "applied",
        "merged",
        "rejected",
        "applied",
        "applied",
        "applied",
        "rejected",
    ]


def test_a_batch_journals_each_write_in_order_and_stamps_each_record_with_its_last_event(
    device_for: Any,
) -> None:
    device = device_for("alice")
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    actions = [create(a), create(b), update(a, 1, {"counted": 9}), update(b, 1, {"sku": "X"})]
    answers = results(device.push(actions))
    assert [r["status"] for r in answers] == ["applied"] * 4

    events = list(AuditEvent.objects.filter(seq__gt=head).order_by("seq"))
    assert [(e.verb, e.object_id) for e in events] == [
        ("record.created", a),
        ("record.created", b),
        ("record.updated", a),
        ("record.updated", b),
    ]
    assert [e.seq for e in events] == list(range(head + 1, head + 5))
    assert [str(e.action_id) for e in events] == [action["id"] for action in actions]
    assert Record.objects.get(pk=a).change_seq == events[2].seq
    assert Record.objects.get(pk=b).change_seq == events[3].seq
    assert list(
        RecordVersion.objects.filter(record_id=a).order_by("version").values_list("version", "data__counted")
    ) == [(1, 40), (2, 9)]
    assert not [item for item in verify_chain() if isinstance(item, BrokenLink)]
    # The feed serves both records, once each, in their final state.
    pulled = {c["record"]: c for c in device.pull().json()["changes"]}
    assert pulled[a]["version"] == 2 and pulled[a]["data"]["counted"] == 9
    assert pulled[b]["data"]["sku"] == "X"


def test_a_batch_costs_the_same_number_of_statements_whatever_its_size(device_for: Any) -> None:
    device = device_for("alice")
    device.push([create(), create()])  # warm: type and team lookups, the chain head row

    def statements(count: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            answers = results(device.push([create() for _ in range(count)]))
        assert [r["status"] for r in answers] == ["applied"] * count
        return len(queries.captured_queries)

    # One statement per table and step, whatever the size (SQLite splits a multi-row statement
    # past its limit of bound parameters: a few more there); a transaction per action took 13
    # statements and a commit per created record.
    small, large = statements(3), statements(60)
    assert large <= small + 3, (small, large)
    assert large <= 25, large


def test_a_batch_the_database_refuses_is_applied_again_action_by_action(device_for: Any, monkeypatch: Any) -> None:
    """As when a concurrent copy of one of the batch's actions commits first: the batch's writes
    fail, its transaction leaves nothing, and each action then goes through the ledger alone."""
    device = device_for("alice")
    refusals = []
    write = records_batch.StagedBatch.write

    def refuse_once(self: records_batch.StagedBatch) -> None:
        if not refusals:
            refusals.append(len(self.created))
            raise IntegrityError("refused")
        write(self)

    monkeypatch.setattr(records_batch.StagedBatch, "write", refuse_once)
    a = str(uuid.uuid4())
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    answers = results(device.push([create(a), update(a, 1, {"counted": 1}), create()]))
    assert refusals == [2]
    assert [(r["status"], r["version"], r["replayed"]) for r in answers] == [
        ("applied", 1, False),
        ("applied", 2, False),
        ("applied", 1, False),
    ]
    assert LedgerEntry.objects.filter(device_id=device.device_id).count() == 3
    assert Record.objects.get(pk=a).version == 2
    assert AuditEvent.objects.filter(seq__gt=head).count() == 3
    assert not [item for item in verify_chain() if isinstance(item, BrokenLink)]


def test_a_review_opened_in_a_batch_is_stored_with_the_batch(device_for: Any) -> None:
    RecordType.objects.filter(key="inspection").update(conflict_policy="review_all")
    device = device_for("alice")
    inspection = {"vehicle": "T-1", "inspector": "alice", "checklist": [{"item": "brakes", "ok": True}], "passed": True}
    waiting = str(uuid.uuid4())
    answers = results(device.push([create(), {**create(waiting, inspection), "type": "inspection"}, create()]))
    assert [r["status"] for r in answers] == ["applied", "pending_review", "applied"]
    review = Review.objects.get(pk=answers[1]["review"])
    assert str(review.record_id) == waiting and review.reason == "review_all"
    assert not Record.objects.filter(pk=waiting).exists()
    verbs = list(AuditEvent.objects.order_by("-seq").values_list("verb", flat=True)[:3])
    assert verbs == ["record.created", "review.opened", "record.created"]


def test_a_push_sent_twice_replays_the_batch(device_for: Any) -> None:
    device = device_for("alice")
    actions = [create(), create(), create()]
    first = results(device.push(actions))
    again = results(device.push(actions))
    assert [r["replayed"] for r in again] == [True] * 3
    assert [{**r, "replayed": False} for r in again] == first
    assert Record.objects.count() == 3


@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True)
def test_another_device_is_not_held_up_while_a_batch_applies_and_no_pull_skips_either(
    device_for: Any, monkeypatch: Any
) -> None:
    """The chain head (the feed's clock) is locked only when a batch writes its events. While
    alice's batch is still applying, bob's single action commits; a pull in between sees bob's
    record, and the next pull sees alice's, which were numbered after it."""
    alice, bob, reader = device_for("alice"), device_for("bob"), device_for("bob")
    reader_cursor = reader.pull().json()["cursor"]
    applying, bob_done = threading.Event(), threading.Event()
    check = record_services._check_schema

    def slow_check(record_type: Any, data: dict[str, Any]) -> None:
        if data.get("sku") == "HOLD":
            applying.set()
            bob_done.wait(timeout=JOIN_SECONDS)
        check(record_type, data)

    monkeypatch.setattr(record_services, "_check_schema", slow_check)
    alice_actions = [create(), create(data=stock(sku="HOLD")), create()]
    outcome: dict[str, Any] = {}

    def alice_pushes() -> None:
        try:
            outcome["alice"] = results(alice.push(alice_actions))
        finally:
            connection.close()

    thread = threading.Thread(target=alice_pushes, daemon=True)
    thread.start()
    try:
        assert applying.wait(timeout=JOIN_SECONDS)
        bob_action = create()
        assert results(bob.push([bob_action]))[0]["status"] == "applied"  # not waiting on alice
        between = reader.pull(reader_cursor).json()
    finally:
        bob_done.set()
        thread.join(timeout=JOIN_SECONDS)
    assert not thread.is_alive()
    assert [r["status"] for r in outcome["alice"]] == ["applied"] * 3
    assert [c["record"] for c in between["changes"]] == [bob_action["record"]]
    after = reader.pull(between["cursor"]).json()
    assert [c["record"] for c in after["changes"]] == [a["record"] for a in alice_actions]


def test_a_batch_chosen_as_a_deadlock_victim_is_applied_again_action_by_action(
    device_for: Any, monkeypatch: Any
) -> None:
    device = device_for("alice")
    write = records_batch.StagedBatch.write
    victims = []

    def deadlock_once(self: records_batch.StagedBatch) -> None:
        if not victims:
            victims.append(1)
            raise OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
        write(self)

    monkeypatch.setattr(records_batch.StagedBatch, "write", deadlock_once)
    actions = [create(), create()]
    assert [r["status"] for r in results(device.push(actions))] == ["applied", "applied"]
    assert victims == [1]
    assert Record.objects.filter(pk__in=[a["record"] for a in actions]).count() == 2
    assert LedgerEntry.objects.filter(device_id=device.device_id).count() == 2


def test_an_action_chosen_as_a_deadlock_victim_is_retried_in_a_new_transaction(
    device_for: Any, monkeypatch: Any
) -> None:
    """The per-action path (a push with one new action, or a batch's fallback): MariaDB rolled
    the whole transaction back, ledger entry included, so the action is applied again."""
    device = device_for("alice")
    apply = sync_services.apply_change
    victims = []

    def deadlock_once(**kwargs: Any) -> Any:
        outcome = apply(**kwargs)
        if not victims:
            victims.append(1)
            raise OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction")
        return outcome

    monkeypatch.setattr(sync_services, "apply_change", deadlock_once)
    action = create()
    [result] = results(device.push([action]))
    assert (result["status"], result["version"], result["replayed"]) == ("applied", 1, False)
    assert victims == [1]
    assert Record.objects.filter(pk=action["record"]).count() == 1
    assert LedgerEntry.objects.get(device_id=device.device_id).status == "applied"
    assert AuditEvent.objects.filter(action_id=action["id"]).count() == 1


def test_a_batch_writes_every_column_of_the_records_it_changes(device_for: Any) -> None:
    """Records that existed before the batch are written back by one multi-row UPDATE: each
    column an update or a delete sets must land, as the per-action path's save() did."""
    alice, bob = device_for("alice"), device_for("bob")
    a, b = create(), create()
    results(alice.push([a, b]))
    before = {r.pk: r for r in Record.objects.filter(pk__in=[a["record"], b["record"]])}

    edit, remove = update(a["record"], 1, {"counted": 3}), delete(b["record"], 1)
    answers = results(bob.push([edit, remove]))
    assert [(r["status"], r["version"]) for r in answers] == [("applied", 2), ("applied", 2)]

    edited = Record.objects.get(pk=a["record"])
    assert edited.data["counted"] == 3 and edited.version == 2 and not edited.deleted
    assert edited.updated_by is not None and edited.updated_by.username == "bob"
    assert edited.updated_by_device == bob.device_id
    assert str(edited.last_action_id) == edit["id"]
    assert edited.captured_at > before[edited.pk].captured_at
    assert edited.updated_at > before[edited.pk].updated_at
    assert edited.created_by_device == alice.device_id  # untouched
    removed = Record.objects.get(pk=b["record"])
    assert removed.deleted and removed.version == 2 and str(removed.last_action_id) == remove["id"]
    seqs = dict(AuditEvent.objects.filter(action_id__in=[edit["id"], remove["id"]]).values_list("object_id", "seq"))
    assert edited.change_seq == seqs[a["record"]] and removed.change_seq == seqs[b["record"]]
    assert list(RecordVersion.objects.filter(record_id=b["record"]).order_by("version").values_list("deleted")) == [
        (False,),
        (True,),
    ]
