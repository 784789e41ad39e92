"""Staged writes for a batch of changes applied in one transaction (sync's batch push).

Inside `staged_batch(...)`, `records.services.apply_change` reads the batch's records from memory
(locked up front, in one statement) and stages what it writes; the batch's audit events are
staged too (`audit.services.staged_journal`). `StagedBatch.write` then writes everything with a
few multi-row statements, and takes the chain head's lock last, for just the statements that
number the batch's events and stamp the records with their feed positions. A created record then
costs a share of ten statements, not thirteen round trips and a commit of its own.

An action's writes are staged only once it has passed every check, so a rejected action leaves
nothing behind; a database error anywhere rolls the whole batch back (the caller then applies it
action by action).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import append_staged, staged_journal
from records.models import Record, RecordType, RecordVersion, Team

# Every column a write changes (Record fields set by records.services._write and _create).
_WRITTEN_FIELDS = [
    "data",
    "schema_version",
    "deleted",
    "version",
    "updated_by",
    "updated_by_device",
    "captured_at",
    "last_action_id",
    "updated_at",
]


class StagedBatch:
    def __init__(self, *, record_ids: Collection[uuid.UUID], type_keys: Collection[str], teams: list[Team]) -> None:
        self.types = {rt.key: rt for rt in RecordType.objects.filter(key__in=set(type_keys))}
        types_by_pk = {rt.pk: rt for rt in self.types.values()}
        self.teams = {team.pk: team for team in teams}
        # Lock every existing record the batch names, in one statement (InnoDB takes the locks in
        # primary key order, so two batches cannot deadlock on each other's records). No
        # select_related: FOR UPDATE would lock the joined type and team rows too.
        locked = list(Record.objects.select_for_update().filter(pk__in=set(record_ids)))
        missing_types = {r.type_id for r in locked} - set(types_by_pk)
        types_by_pk.update(RecordType.objects.in_bulk(missing_types))
        missing_teams = {r.team_id for r in locked} - set(self.teams)
        self.teams.update(Team.objects.in_bulk(missing_teams))
        # None: no such record (yet); a create in the batch puts it here.
        self.records: dict[uuid.UUID, Record | None] = dict.fromkeys(record_ids)
        for record in locked:
            record.type = types_by_pk[record.type_id]
            record.team = self.teams[record.team_id]
            self.records[record.pk] = record
        self.created: dict[uuid.UUID, Record] = {}
        self.changed: dict[uuid.UUID, Record] = {}
        self.versions: dict[tuple[uuid.UUID, int], RecordVersion] = {}
        self.events: dict[uuid.UUID, AuditEvent] = {}  # each written record's last event
        self.journal: list[AuditEvent] = []

    # --- what apply_change reads and writes -------------------------------------------------------

    def record_type(self, key: str) -> RecordType | None:
        if key not in self.types:
            found = RecordType.objects.filter(key=key).first()
            if found is None:
                return None
            self.types[key] = found
        return self.types[key]

    def record(self, pk: uuid.UUID) -> Record | None:
        if pk not in self.records:
            # Not named up front (never, for sync's batches): read and lock it now.
            found = Record.objects.select_for_update().filter(pk=pk).first()
            if found is None:
                return None
            found.team = self.teams.get(found.team_id) or found.team
            self.records[pk] = found
        return self.records[pk]

    def insert(self, record: Record) -> bool:
        """Stage a new record; False if one with its id exists (or was created earlier in the batch)."""
        if self.record(record.pk) is not None:
            return False
        self.records[record.pk] = record
        self.created[record.pk] = record
        return True

    def version_data(self, record: Record, version: int) -> tuple[Any, int] | None:
        staged = self.versions.get((record.pk, version))
        if staged is not None:
            return staged.data, staged.schema_version
        return (
            RecordVersion.objects.filter(record=record, version=version).values_list("data", "schema_version").first()
        )

    def add_version(self, version: RecordVersion) -> None:
        self.versions[(version.record_id, version.version)] = version

    def save(self, record: Record, event: AuditEvent) -> None:
        self.events[record.pk] = event
        if record.pk not in self.created:
            record.updated_at = timezone.now()
            self.changed[record.pk] = record

    # --- the writes -------------------------------------------------------------------------------

    def write(self) -> None:
        """Write what the batch staged: records and versions first, then (the chain head locked
        from here to commit) the events, and each written record's feed position."""
        Record.objects.bulk_create(self.created.values())
        Record.objects.bulk_update(self.changed.values(), _WRITTEN_FIELDS)
        RecordVersion.objects.bulk_create(self.versions.values())
        append_staged(self.journal)
        stamped = []
        for pk, event in self.events.items():
            record = self.records[pk]
            assert record is not None
            record.change_seq = event.seq
            stamped.append(record)
        Record.objects.bulk_update(stamped, ["change_seq"])


_current: ContextVar[StagedBatch | None] = ContextVar("records_staged_batch", default=None)


def current() -> StagedBatch | None:
    return _current.get()


@contextmanager
def staged_batch(
    *, record_ids: Collection[uuid.UUID], type_keys: Collection[str], teams: list[Team]
) -> Iterator[StagedBatch]:
    """Stage the writes of every apply_change inside; write them when the block ends without an
    error (inside the caller's transaction, which must be open)."""
    if not connection.in_atomic_block:
        raise RuntimeError("a staged batch must run inside the transaction that will commit it")
    batch = StagedBatch(record_ids=record_ids, type_keys=type_keys, teams=teams)
    token = _current.set(batch)
    try:
        with staged_journal() as events:
            batch.journal = events
            yield batch
        batch.write()
    finally:
        _current.reset(token)
