"""The one way into the audit journal. Every service that applies a change calls `record_event`
inside its own transaction, so a change and its journal entry commit (or roll back) together."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit.maintenance import maintenance
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
    Callers should call it as late as possible in their transaction to keep that lock short.

    Inside `staged_journal()` the event is only staged: it gets its seq, time and hashes when
    `append_staged` writes the batch."""
    if not connection.in_atomic_block:
        raise RuntimeError("record_event must run inside the transaction of the change it journals")
    event = AuditEvent(
        # Unset (None) until append_staged: then "now", the time the event is recorded.
        **({"occurred_at": occurred_at} if occurred_at is not None else {}),
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
    )
    staged = _staged.get()
    if staged is not None:
        staged.append(event)
        return event
    append_staged([event])
    return event


_staged: ContextVar[list[AuditEvent] | None] = ContextVar("audit_staged_events", default=None)


@contextmanager
def staged_journal() -> Iterator[list[AuditEvent]]:
    """Stage the events `record_event` is asked for inside the block, in order, instead of
    appending each at once; the caller appends them with `append_staged` before it commits. A
    batch of changes then locks the chain head once, at its end, not from its first change on."""
    if _staged.get() is not None:
        raise RuntimeError("staged journals do not nest")
    events: list[AuditEvent] = []
    token = _staged.set(events)
    try:
        yield events
    finally:
        _staged.reset(token)


def append_staged(events: list[AuditEvent]) -> None:
    """Number `events` (in order), chain their hashes and insert them: one locking read of the chain
    head, one multi-row INSERT, one UPDATE of the head. The head stays locked until commit."""
    if not events:
        return
    if not connection.in_atomic_block:
        raise RuntimeError("journal events must be appended inside the transaction of their change")
    head = _locked_head()
    # Read the clock once the lock is held, so recorded_at follows seq (up to clock skew between
    # app servers) and a date range of the trail is close to a seq range.
    now = timezone.now()
    seq, prev_hash = head.seq, head.hash
    for event in events:
        seq += 1
        event.seq = seq
        event.recorded_at = now
        event.occurred_at = event.occurred_at or now
        event.prev_hash = prev_hash
        event.hash = prev_hash = event_hash(event)
    AuditEvent.objects.bulk_create(events)
    ChainHead.objects.filter(pk=1).update(seq=seq, hash=prev_hash)


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


@dataclass(frozen=True)
class PurgeAnchor:
    """Where the journal starts after a retention purge: the last purged event's seq and hash,
    as the `audit.purged` event (itself in the chain) recorded them."""

    seq: int
    hash: str


PURGED_VERB = "audit.purged"


def purge_anchor() -> PurgeAnchor | None:
    event = AuditEvent.objects.filter(verb=PURGED_VERB).order_by("-seq").first()
    if event is None:
        return None
    try:
        return PurgeAnchor(seq=int(event.changes["through_seq"][1]), hash=str(event.changes["through_hash"][1]))
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _events_from(seq: int, chunk_size: int) -> Iterator[AuditEvent]:
    """Every event from `seq` on, in seq order, a chunk at a time by seq range (keyset): unlike
    `.iterator()`, which the MySQL driver buffers whole, memory stays flat at millions of rows."""
    while True:
        chunk = list(AuditEvent.objects.filter(seq__gte=seq).order_by("seq")[:chunk_size])
        yield from chunk
        if len(chunk) < chunk_size:
            return
        seq = chunk[-1].seq + 1


def verify_chain(*, chunk_size: int = 2000) -> Iterator[int | BrokenLink]:
    """Walk the journal in seq order. Yields the seq of each good event; stops at the first
    broken link with a BrokenLink that says what is wrong with it.

    The walk starts at #1 from the genesis hash or, after a retention purge, where the latest
    `audit.purged` event says the journal now starts."""
    first = AuditEvent.objects.order_by("seq").first()
    anchor = purge_anchor()
    expected_seq, prev_hash = 1, GENESIS_HASH
    if first is not None and first.seq > 1:
        if anchor is None or anchor.seq < first.seq - 1:
            missing = anchor.seq + 1 if anchor is not None else 1
            yield BrokenLink(
                missing,
                f"events #{missing} to #{first.seq - 1} are missing and no audit.purged event accounts for them",
            )
            return
        expected_seq = first.seq
        # A purge that stopped half-way leaves events up to the anchor: their own prev_hash
        # starts the walk, and the anchor's hash is checked when the walk passes it.
        prev_hash = anchor.hash if anchor.seq == first.seq - 1 else first.prev_hash
    for event in _events_from(expected_seq, chunk_size):
        if event.seq != expected_seq:
            yield BrokenLink(expected_seq, f"event #{expected_seq} is missing (next is #{event.seq})")
            return
        if event.prev_hash != prev_hash:
            yield BrokenLink(event.seq, "prev_hash does not match the previous event's hash")
            return
        if event_hash(event) != event.hash:
            yield BrokenLink(event.seq, "its content does not match its hash (the row was altered)")
            return
        if anchor is not None and event.seq == anchor.seq and event.hash != anchor.hash:
            yield BrokenLink(event.seq, "its hash is not the one the retention purge recorded for it")
            return
        prev_hash = event.hash
        expected_seq += 1
        yield event.seq
    head = ChainHead.objects.filter(pk=1).first()
    if head is not None and head.seq != expected_seq - 1:
        yield BrokenLink(expected_seq, f"the chain head says #{head.seq} but the journal ends at #{expected_seq - 1}")
    elif head is not None and expected_seq > 1 and head.hash != prev_hash:
        yield BrokenLink(expected_seq - 1, "the chain head's hash is not the last event's hash")


def purge_events(*, before: datetime, batch_size: int = 5000) -> int:
    """Delete the journal's events recorded before `before` (retention), oldest first, and return
    how many went. The chain stays verifiable: first, in its own short transaction, an
    `audit.purged` event (source system) records the seq and hash of the last event to go; then
    the rows go in batches by seq range, each with the maintenance variable set (MariaDB's
    triggers refuse it otherwise). Stopping half-way is safe: the next run finishes the job.

    Nothing at or after the first event recorded at `before` or later goes, even if an older one
    follows it (recorded_at follows seq only up to clock skew)."""
    first_young = AuditEvent.objects.filter(recorded_at__gte=before).order_by("seq").values_list("seq", flat=True)
    young = first_young.first()
    through = (
        (young - 1)
        if young is not None
        else (ChainHead.objects.filter(pk=1).values_list("seq", flat=True).first() or 0)
    )
    anchor = purge_anchor()
    if anchor is None or through > anchor.seq:
        last = AuditEvent.objects.filter(seq=through).first()
        if last is None:
            return 0
        with transaction.atomic():
            record_event(
                verb=PURGED_VERB,
                source="system",
                object_type="audit",
                object_id="journal",
                changes={
                    "through_seq": [anchor.seq if anchor else 0, through],
                    "through_hash": [anchor.hash if anchor else GENESIS_HASH, last.hash],
                    "before": [None, _iso(before)],
                },
            )
    else:
        through = anchor.seq
    oldest = AuditEvent.objects.order_by("seq").values_list("seq", flat=True).first()
    deleted = 0
    if oldest is None:
        return 0
    for start in range(oldest, through + 1, batch_size):
        end = min(start + batch_size - 1, through)
        with maintenance(), transaction.atomic():
            deleted += AuditEvent.objects.filter(seq__gte=start, seq__lte=end)._raw_delete(AuditEvent.objects.db)
    return deleted
