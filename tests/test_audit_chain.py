"""The audit journal: append-only, hash-chained, gap-free, and `manage.py audit_verify` names the
first broken link."""

from __future__ import annotations

import io
import itertools
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AppendOnlyError, AuditEvent, ChainHead
from audit.services import GENESIS_HASH, event_hash, record_event
from records.services import Actor, Change, apply_change


def stock(**fields: Any) -> dict[str, Any]:
    return {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each", **fields}


@pytest.fixture
def journal(user: Any) -> list[AuditEvent]:
    """A few record changes by alice's device, journalled by the service."""
    actor = Actor.for_device(user=user("alice"), device_id=uuid.uuid4())
    record = uuid.uuid4()
    for op, data, base in (("create", stock(), None), ("update", {"counted": 41}, 1), ("delete", {}, 2)):
        outcome = apply_change(
            actor=actor,
            change=Change(
                op=op,  # type: ignore[arg-type]
                record_id=record,
                type_key="stock_count",
                data=data,
                captured_at=timezone.now(),
                base_version=base,
                action_id=uuid.uuid4(),
            ),
        )
        assert outcome.applied, outcome
    return list(AuditEvent.objects.order_by("seq"))


def verify() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def tamper(sql: str, params: list[Any]) -> None:
    """What someone with SQL access could do: straight SQL (the ORM refuses to touch journal rows),
    past MariaDB's append-only triggers by setting the session variable they let through."""
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SET @fieldsync_audit_maintenance = 1")
        try:
            cursor.execute(sql, params)
        finally:
            if connection.vendor == "mysql":
                cursor.execute("SET @fieldsync_audit_maintenance = NULL")


def test_the_chain_links_every_event_to_the_one_before(journal: list[AuditEvent]) -> None:
    events = list(AuditEvent.objects.order_by("seq"))

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    assert all(event_hash(e) == e.hash for e in events)
    head = ChainHead.objects.get(pk=1)
    assert (head.seq, head.hash) == (events[-1].seq, events[-1].hash)


def test_audit_verify_passes_on_an_intact_chain(journal: list[AuditEvent]) -> None:
    assert f"audit chain ok: {AuditEvent.objects.count()} events verified" in verify()


def test_audit_verify_names_an_altered_event(journal: list[AuditEvent]) -> None:
    victim = journal[-2]
    tamper(
        f"UPDATE {AuditEvent._meta.db_table} SET changes = %s WHERE seq = %s", ['{"counted": [40, 4000]}', victim.seq]
    )

    with pytest.raises(CommandError, match=f"broken at event #{victim.seq}: its content does not match"):
        verify()


def test_audit_verify_names_a_missing_event(journal: list[AuditEvent]) -> None:
    victim = journal[-2]
    tamper(f"DELETE FROM {AuditEvent._meta.db_table} WHERE seq = %s", [victim.seq])

    with pytest.raises(CommandError, match=f"broken at event #{victim.seq}: event #{victim.seq} is missing"):
        verify()


def test_audit_verify_notices_the_last_event_cut_off(journal: list[AuditEvent]) -> None:
    tamper(f"DELETE FROM {AuditEvent._meta.db_table} WHERE seq = %s", [journal[-1].seq])

    with pytest.raises(CommandError, match="the chain head says"):
        verify()


def test_journal_rows_cannot_be_updated_or_deleted_through_the_orm(journal: list[AuditEvent]) -> None:
    event = journal[0]

    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(verb="record.forged")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(AppendOnlyError):
        event.delete()
    event.verb = "record.forged"
    with pytest.raises(AppendOnlyError):
        event.save()
    assert "audit chain ok" in verify()


@pytest.mark.django_db(transaction=True)  # not wrapped in the test's own transaction
def test_an_event_can_only_be_written_inside_the_transaction_of_its_change() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        record_event(verb="record.created", source="system", object_type="record", object_id=uuid.uuid4())


def test_a_rolled_back_change_leaves_no_event_and_no_hole(journal: list[AuditEvent], user: Any) -> None:
    actor = Actor(user=user("admin"), source="admin")

    def change() -> Change:
        return Change(
            op="create",
            record_id=uuid.uuid4(),
            type_key="stock_count",
            data=stock(),
            captured_at=timezone.now(),
            team_slug="north",
        )

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        assert apply_change(actor=actor, change=change()).applied
        raise Abort
    assert apply_change(actor=actor, change=change()).applied

    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(journal) + 2))
    assert "audit chain ok" in verify()


def test_each_event_says_who_did_what_from_where(journal: list[AuditEvent]) -> None:
    created, updated, deleted = (e for e in journal if e.object_type == "record")

    assert [e.verb for e in (created, updated, deleted)] == ["record.created", "record.updated", "record.deleted"]
    assert {(e.actor_username, e.source, e.record_type, e.team) for e in journal} == {
        ("alice", "device", "stock_count", "north")
    }
    assert all(e.device_id and e.action_id for e in journal)
    assert updated.changes == {"counted": [40, 41]}
    assert deleted.changes == {"deleted": [False, True]}
