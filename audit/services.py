"""The one way into the audit journal. Every service that applies a change calls `record_event`
inside its own transaction, so a change and its journal entry commit (or roll back) together."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit.models import GENESIS_HASH, AuditEvent, ChainHead


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(event: AuditEvent) -> str:
    """sha256 over the canonical JSON of the event's content and the previous entry's hash."""
    payload = {
        "seq": event.seq,
        "occurred_at": _iso(event.occurred_at),
        "recorded_at": _iso(event.recorded_at),
        "actor": event.actor_username,
        "device_id": str(event.device_id) if event.device_id else None,
        "source": event.source,
        "verb": event.verb,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "record_type": event.record_type,
        "team": event.team,
        "action_id": str(event.action_id) if event.action_id else None,
        "request_id": event.request_id,
        "changes": event.changes,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _locked_head() -> ChainHead:
    try:
        return ChainHead.objects.select_for_update().get(pk=1)
    except ChainHead.DoesNotExist:
        pass
    # Insert first and let the primary key decide: a locking read of a missing row takes a
    # gap lock on MariaDB, and two of those deadlock.
    try:
        with transaction.atomic():
            ChainHead.objects.create(pk=1, seq=0, hash=GENESIS_HASH)
    except IntegrityError:
        pass
    return ChainHead.objects.select_for_update().get(pk=1)


def record_event(
    *,
    verb: str,
    source: str,
    object_type: str,
    object_id: str | uuid.UUID,
    actor: User | None = None,
    device_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
    action_id: uuid.UUID | None = None,
    request_id: str = "",
    changes: dict[str, Any] | None = None,
    record_type: str = "",
    team: str = "",
) -> AuditEvent:
    """Append one event to the hash chain. Must run inside the caller's transaction: the chain
    head stays locked until that transaction commits, which is what makes `seq` commit-ordered.
    Callers should call it as late as possible in their transaction to keep that lock short."""
    if not connection.in_atomic_block:
        raise RuntimeError("record_event must run inside the transaction of the change it journals")
    now = timezone.now()
    head = _locked_head()
    event = AuditEvent(
        seq=head.seq + 1,
        occurred_at=occurred_at or now,
        recorded_at=now,
        actor=actor if actor is not None and actor.pk else None,
        actor_username=actor.get_username() if actor is not None else "",
        device_id=device_id,
        source=source,
        verb=verb,
        object_type=object_type,
        object_id=str(object_id),
        record_type=record_type,
        team=team,
        action_id=action_id,
        request_id=request_id,
        # Round-trip through JSON so the hash covers exactly what the database will return.
        changes=json.loads(canonical_json(changes or {})),
        prev_hash=head.hash,
    )
    event.hash = event_hash(event)
    event.save()
    ChainHead.objects.filter(pk=1).update(seq=event.seq, hash=event.hash)
    return event


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, list[Any]]:
    """{field: [before, after]} for every field whose value differs."""
    before = before or {}
    after = after or {}
    return {
        key: [before.get(key), after.get(key)]
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


@dataclass(frozen=True)
class BrokenLink:
    seq: int
    reason: str


def verify_chain(*, chunk_size: int = 2000) -> Iterator[int | BrokenLink]:
    """Walk the journal in seq order. Yields the seq of each good event; stops at the first
    broken link with a BrokenLink that says what is wrong with it."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=chunk_size)
    for event in events:
        if event.seq != expected_seq:
            yield BrokenLink(expected_seq, f"event #{expected_seq} is missing (next is #{event.seq})")
            return
        if event.prev_hash != prev_hash:
            yield BrokenLink(event.seq, "prev_hash does not match the previous event's hash")
            return
        if event_hash(event) != event.hash:
            yield BrokenLink(event.seq, "its content does not match its hash (the row was altered)")
            return
        prev_hash = event.hash
        expected_seq += 1
        yield event.seq
    head = ChainHead.objects.filter(pk=1).first()
    if head is not None and head.seq != expected_seq - 1:
        yield BrokenLink(expected_seq, f"the chain head says #{head.seq} but the journal ends at #{expected_seq - 1}")
