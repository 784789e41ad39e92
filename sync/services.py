"""The device edge: registering and revoking devices, push (through the idempotency ledger), pull."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from approvals.services import open_review, review_decision
from audit.models import AuditEvent
from audit.services import canonical_json, record_event
from records import schemas
from records.batch import staged_batch
from records.models import Record, RecordType, Team
from records.services import Actor, Change, ChangeError, Op, apply_change
from records.services import Outcome as ChangeOutcome
from sync.models import Device, DeviceRecordType, LedgerEntry, Outcome

# --- devices ----------------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def register_device(*, user: User, name: str, platform: str, request_id: str = "") -> tuple[Device, str]:
    """Create a device and return it with its token, which is never stored or shown again."""
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        device = Device.objects.create(user=user, name=name, platform=platform, token_hash=hash_secret(secret))
        record_event(
            verb="device.registered",
            source="device",
            actor=user,
            device_id=device.id,
            object_type="device",
            object_id=device.id,
            request_id=request_id,
            changes={"name": [None, name], "platform": [None, platform]},
        )
    return device, f"{device.id.hex}.{secret}"


def authenticate_token(token: str) -> Device | None:
    """The device a token belongs to (revoked or not), or None. Compared in constant time."""
    device_hex, _, secret = token.partition(".")
    try:
        device_id = uuid.UUID(hex=device_hex)
    except ValueError:
        return None
    device = Device.objects.select_related("user").filter(pk=device_id).first()
    candidate = hash_secret(secret)
    if device is None or not secret or not hmac.compare_digest(candidate, device.token_hash):
        return None
    return device


def touch_device(device: Device) -> None:
    """Record that the device was seen, at most once per DEVICE_LAST_SEEN_INTERVAL (one
    conditional UPDATE, so a burst of requests does not write on every one)."""
    now = timezone.now()
    threshold = now - settings.DEVICE_LAST_SEEN_INTERVAL
    if device.last_seen is not None and device.last_seen > threshold:
        return
    from django.db.models import Q

    Device.objects.filter(Q(last_seen__isnull=True) | Q(last_seen__lte=threshold), pk=device.pk).update(last_seen=now)
    device.last_seen = now


def revoke_device(*, device: Device, by: User, source: str = "admin") -> bool:
    """Revoke a device's token. Returns False if it was already revoked."""
    with transaction.atomic():
        now = timezone.now()
        updated = Device.objects.filter(pk=device.pk, revoked_at__isnull=True).update(revoked_at=now)
        if not updated:
            return False
        record_event(
            verb="device.revoked",
            source=source,
            actor=by,
            device_id=device.id,
            object_type="device",
            object_id=device.id,
            changes={"revoked_at": [None, now.isoformat()]},
        )
    device.revoked_at = now
    return True


# --- push -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One validated action from a push, with the exact JSON it arrived as (for the fingerprint)."""

    id: uuid.UUID
    op: Op
    type: str
    record: uuid.UUID
    team: str | None
    base_version: int | None
    data: dict[str, Any]
    captured_at: datetime
    raw: dict[str, Any]
    # The version of the type's schema the action was captured with; None: the current one.
    schema_version: int | None = None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(canonical_json(self.raw).encode()).hexdigest()


def _result(action_id: uuid.UUID, outcome: ChangeOutcome) -> dict[str, Any]:
    return {
        "id": str(action_id),
        "status": outcome.status,
        "record": str(outcome.record_id),
        "version": outcome.version,
        "data": outcome.data,
        "review": None,
        "error": outcome.error.as_dict() if outcome.error else None,
        "replayed": False,
    }


def _rejected(action: Action, code: str, message: str) -> dict[str, Any]:
    return _result(
        action.id, ChangeOutcome(status="rejected", record_id=action.record, error=ChangeError(code, message))
    )


class _Duplicate(Exception):
    pass


def push(
    *, device: Device, sent_at: datetime, actions: list[Action], request_id: str = "", staged: bool = True
) -> list[dict[str, Any]]:
    """Apply a device's actions in the order sent and return one result per action. Each result is
    durable (committed) before this returns.

    The actions the ledger does not hold yet are applied in one transaction (`_push_batch`),
    each all-or-nothing within it; if that transaction fails at the database level (a
    concurrent copy of one of its actions, a deadlock), nothing of it remains and the same
    actions are applied again one transaction each (`push_one`), where the ledger's unique
    constraint decides action by action. `staged=False` skips the batch transaction (the bench
    measures that path against it)."""
    received_at = timezone.now()
    offset = received_at - sent_at
    actor = Actor.for_device(user=device.user, device_id=device.id, request_id=request_id)
    stored = _stored_answers(device=device, actions=actions)
    fresh = [action for action, answer in zip(actions, stored, strict=True) if answer is None]
    batched: dict[uuid.UUID, dict[str, Any]] = {}
    if staged and len(fresh) > 1 and len({action.id for action in fresh}) == len(fresh):
        batched = _push_batch(device=device, actor=actor, actions=fresh, offset=offset, received_at=received_at)
    rejected_creates: set[uuid.UUID] = set()
    results = []
    for action, answer in zip(actions, stored, strict=True):
        result = (
            answer
            or batched.get(action.id)
            or push_one(
                device=device,
                actor=actor,
                action=action,
                offset=offset,
                received_at=received_at,
                rejected_creates=rejected_creates,
            )
        )
        if action.op == "create" and result["status"] == "rejected" and not result["replayed"]:
            rejected_creates.add(action.record)
        results.append(result)
    note_pushed_versions(device=device, actions=actions)
    return results


def corrected_capture_time(captured_at: datetime, *, offset: timedelta, received_at: datetime) -> datetime:
    """The capture time on the server's clock: shifted by the device's offset (server receive time
    minus sent_at), and never later than the push arrived (a capture "after" that is a bad clock)."""
    try:
        return min(captured_at + offset, received_at)
    except OverflowError:
        # A clock thousands of years off pushes the sum past year 1 or 9999; both ends are valid
        # input (DRF accepts them), so clamp instead of failing the push with a 500.
        return received_at if offset > timedelta(0) else datetime.min.replace(tzinfo=UTC)


# MariaDB error codes worth retrying an action for: the whole transaction was rolled back and
# nothing of it remains, so applying it again is safe (the ledger insert decides again).
_RETRYABLE_MYSQL_ERRORS = {1213, 1205}  # deadlock, lock wait timeout
_ATTEMPTS = 4


def push_one(**kwargs: Any) -> dict[str, Any]:
    """One action in its own transaction, retried when MariaDB picked it as a deadlock victim
    (concurrent inserts of one unique key can deadlock when the first inserter rolls back)."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _push_once(**kwargs)
        except OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code not in _RETRYABLE_MYSQL_ERRORS or attempt == _ATTEMPTS:
                raise
            time.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


def _push_batch(
    *, device: Device, actor: Actor, actions: list[Action], offset: timedelta, received_at: datetime
) -> dict[uuid.UUID, dict[str, Any]]:
    """Apply `actions` (none in the ledger yet, no action id twice) in one transaction, with their
    writes staged and written together at the end (records/batch.py), and return their results by
    action id; or {} if the database refused the transaction, which then left nothing behind."""
    rejected_creates: set[uuid.UUID] = set()
    results: dict[uuid.UUID, dict[str, Any]] = {}
    entries = []
    try:
        with (
            transaction.atomic(),
            staged_batch(
                record_ids={action.record for action in actions},
                type_keys={action.type for action in actions},
                teams=list((actor.teams or {}).values()),
            ),
        ):
            for action in actions:
                entry = _ledger_entry(device=device, action=action, offset=offset, received_at=received_at)
                result = _apply_action(
                    actor=actor,
                    action=action,
                    captured_at=corrected_capture_time(action.captured_at, offset=offset, received_at=received_at),
                    rejected_creates=rejected_creates,
                )
                if action.op == "create" and result["status"] == "rejected":
                    rejected_creates.add(action.record)
                _settle(entry, result)
                entries.append(entry)
                results[action.id] = result
            # Before the records and the journal: a concurrent copy of one of these actions (a
            # retry sent while this batch is applied) waits here on the unique key, and then
            # fails the batch, which is applied again action by action.
            LedgerEntry.objects.bulk_create(entries)
    except (IntegrityError, OperationalError) as exc:
        if isinstance(exc, OperationalError) and (exc.args[0] if exc.args else None) not in _RETRYABLE_MYSQL_ERRORS:
            raise
        return {}
    return results


def _ledger_entry(*, device: Device, action: Action, offset: timedelta, received_at: datetime) -> LedgerEntry:
    return LedgerEntry(
        device=device,
        action_id=action.id,
        fingerprint=action.fingerprint,
        op=action.op,
        type_key=action.type,
        record_id=action.record,
        captured_at=action.captured_at,
        clock_offset_ms=int(offset / timedelta(milliseconds=1)),
        received_at=received_at,
    )


def _settle(entry: LedgerEntry, result: dict[str, Any]) -> None:
    entry.status = result["status"]
    entry.error_code = result["error"]["code"] if result["error"] else ""
    entry.result = result


def _apply_action(
    *, actor: Actor, action: Action, captured_at: datetime, rejected_creates: set[uuid.UUID]
) -> dict[str, Any]:
    """Apply one action (the ledger entry is the caller's) and open its review if it waits for one."""
    if action.op != "create" and action.record in rejected_creates:
        return _rejected(action, "create_rejected", "This record's create was rejected earlier in the batch.")
    change = Change(
        op=action.op,
        record_id=action.record,
        type_key=action.type,
        data=action.data,
        captured_at=captured_at,
        base_version=action.base_version,
        team_slug=action.team,
        action_id=action.id,
        schema_version=action.schema_version,
    )
    outcome = apply_change(actor=actor, change=change)
    result = _result(action.id, outcome)
    if outcome.review is not None:
        review = open_review(actor=actor, change=change, request=outcome.review)
        result["review"] = str(review.id)
    return result


def _push_once(
    *,
    device: Device,
    actor: Actor,
    action: Action,
    offset: timedelta,
    received_at: datetime,
    rejected_creates: set[uuid.UUID],
) -> dict[str, Any]:
    entry = _ledger_entry(device=device, action=action, offset=offset, received_at=received_at)
    captured_at = corrected_capture_time(action.captured_at, offset=offset, received_at=received_at)
    try:
        with transaction.atomic():
            try:
                # Insert first: the unique (device, action id) constraint decides who applies. It is
                # the transaction's first statement, so a duplicate has nothing to undo but the
                # transaction itself: no savepoint (two round trips per action) is needed.
                entry.save(force_insert=True)
            except IntegrityError:
                raise _Duplicate from None
            result = _apply_action(
                actor=actor, action=action, captured_at=captured_at, rejected_creates=rejected_creates
            )
            _settle(entry, result)
            entry.save(update_fields=["status", "error_code", "result"])
            return result
    except _Duplicate:
        return _replay(device=device, action=action, fingerprint=entry.fingerprint)


def _replay(*, device: Device, action: Action, fingerprint: str) -> dict[str, Any]:
    # READ COMMITTED: this read sees the row the winner committed (its insert made ours wait).
    entry = LedgerEntry.objects.filter(device=device, action_id=action.id).first()
    if entry is None:
        # The other request rolled back after our insert failed; extremely rare. Let the device retry.
        return _rejected(action, "retry_later", "A concurrent copy of this action did not finish; retry it.")
    if not hmac.compare_digest(entry.fingerprint, fingerprint):
        return _key_reused(action)
    # Counted on the ledger row, so the record's timeline shows every copy the device sent.
    LedgerEntry.objects.filter(pk=entry.pk).update(replays=F("replays") + 1, last_replayed_at=timezone.now())
    return {**entry.result, "replayed": True}


def _key_reused(action: Action) -> dict[str, Any]:
    return _rejected(
        action, "idempotency_key_reused", "This action id was already used for a different action; nothing was changed."
    )


def _stored_answers(*, device: Device, actions: list[Action]) -> list[dict[str, Any] | None]:
    """The stored answer of every action in the batch that the ledger already holds (a retried
    batch), None for the others. One read and one counter update for the whole batch, instead of
    a failed insert, a rollback, a re-read and a commit per action: a retried batch of 500 costs
    what one action costs. Only committed rows are seen (READ COMMITTED), so an action another
    request is applying right now is not found here and goes through the insert, whose unique
    constraint decides as before (`_replay`)."""
    ids = {action.id for action in actions}
    if not ids:
        return []
    entries = {
        entry.action_id: entry
        for entry in LedgerEntry.objects.filter(device=device, action_id__in=ids).only(
            "id", "action_id", "fingerprint", "result"
        )
    }
    if not entries:
        return [None] * len(actions)
    answers: list[dict[str, Any] | None] = []
    copies: Counter[int] = Counter()
    for action in actions:
        entry = entries.get(action.id)
        if entry is None:
            answers.append(None)
        elif hmac.compare_digest(entry.fingerprint, action.fingerprint):
            copies[entry.pk] += 1
            answers.append({**entry.result, "replayed": True})
        else:
            answers.append(_key_reused(action))
    now = timezone.now()
    for times in sorted(set(copies.values())):
        replayed = [pk for pk, n in copies.items() if n == times]
        LedgerEntry.objects.filter(pk__in=replayed).update(replays=F("replays") + times, last_replayed_at=now)
    return answers


def action_result(*, device: Device, action_id: uuid.UUID) -> dict[str, Any] | None:
    entry = LedgerEntry.objects.filter(device=device, action_id=action_id).first()
    if entry is None:
        return None
    result = dict(entry.result)
    if entry.status == Outcome.PENDING_REVIEW and result.get("review"):
        decision = review_decision(uuid.UUID(result["review"]))
        if decision is not None:
            result["decision"] = decision
            # The action's final outcome, as the device should now treat it.
            if decision["state"] in ("approved", "resolved"):
                result["status"] = "applied"
                result["version"] = decision["version"]
                result["data"] = decision["data"]
            else:
                result["status"] = "rejected"
                result["error"] = {
                    "code": f"review_{decision['state']}",
                    "message": decision["note"] or f"The review was {decision['state']}.",
                    "fields": {},
                }
    return result


def purge_expired_ledger_entries(*, now: datetime | None = None, batch_size: int = 5000) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.SYNC_LEDGER_RETENTION_DAYS)
    # In batches: one DELETE of months of rows would hold its locks for as long as it runs.
    deleted = 0
    while True:
        batch = list(LedgerEntry.objects.filter(received_at__lt=cutoff).values_list("pk", flat=True)[:batch_size])
        if not batch:
            return deleted
        deleted += LedgerEntry.objects.filter(pk__in=batch).delete()[0]


# --- pull -------------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    pass


def _teams_key(team_ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, sorted(team_ids))).encode()).hexdigest()[:16]


def _anchor(seq: int) -> str:
    """A fingerprint of the journal at `seq`: the start of that event's hash."""
    if seq == 0:
        return ""
    found = AuditEvent.objects.filter(seq=seq).values_list("hash", flat=True).first()
    return found[:16] if found else "-"


def encode_cursor(seq: int, team_ids: list[int]) -> str:
    payload = {"v": 1, "s": seq, "t": _teams_key(team_ids), "h": _anchor(seq)}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, team_ids: list[int]) -> int:
    """The feed position a cursor stands for. It restarts from the beginning when
    - it was made for another set of teams, so a user who joins a team gets its older records;
    - the journal no longer has the event the cursor points at (the database was restored from a
      backup taken before it): numbers handed out after the restore would otherwise look already
      seen, and the device would silently skip them."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        seq = payload["s"]
        teams = payload["t"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise InvalidCursor(cursor) from None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or payload.get("v") != 1:
        raise InvalidCursor(cursor)
    if teams != _teams_key(team_ids):
        return 0
    anchor = payload.get("h")
    if not isinstance(anchor, str) or anchor != _anchor(seq):
        return 0
    return seq


def pull(*, user: User, cursor: str | None, limit: int) -> dict[str, Any]:
    """The latest state of every record of the user's teams that changed after the cursor.

    Gap-free because `change_seq` is handed out under the audit chain head's lock, which the
    writer holds until it commits: a change numbered n+1 cannot commit before change n has."""
    teams = dict(Team.objects.filter(members=user).values_list("pk", "slug"))
    team_ids = list(teams)
    after = decode_cursor(cursor, team_ids) if cursor else 0
    # First where the page ends: the change_seqs after the cursor, one index-only range read of
    # the (team, change_seq) index per team, each stopping after the page. Then the page's rows
    # with that end as an upper bound. Asked for the rows with no upper bound, MariaDB rejects the
    # range (InnoDB estimates any long range at half the table, and fetching those rows would
    # cost more than a scan) and reads the index by team alone, the cursor only filtering: every
    # entry of the team before the cursor, again for each page, so a page mid-feed grew with the
    # table. A bounded range is estimated at the page and read as one. A single first query for
    # several teams would sort all their entries after the cursor.
    seqs: list[int] = []
    for team_id in team_ids:
        seqs.extend(
            Record.objects.filter(team_id=team_id, change_seq__gt=after)
            .order_by("change_seq")
            .values_list("change_seq", flat=True)[: limit + 1]
        )
    seqs.sort()
    has_more = len(seqs) > limit
    last = seqs[min(limit, len(seqs)) - 1] if seqs else after
    # Seqs are handed out in commit order, so nothing can commit into (after, last] any more; a
    # record written since the first query has moved past `last` and comes on a later page.
    # Types and teams are mapped here, not joined: with them joined in SQL, MariaDB reads the tiny
    # type table first through a join buffer, which loses the feed's order.
    rows = list(
        Record.objects.filter(team_id__in=team_ids, change_seq__gt=after, change_seq__lte=last)
        .order_by("change_seq")
        .only("id", "type_id", "team_id", "version", "deleted", "data", "schema_version", "updated_at", "change_seq")[
            :limit
        ]
    )
    types = RecordType.objects.only("id", "key", "schema_version").in_bulk({row.type_id for row in rows})
    # Served in each type's current schema version, whatever version a row is stored in.
    schemas.bring_forward([row for row in rows if not row.deleted], types=types)
    changes = [
        {
            "type": types[row.type_id].key,
            "record": str(row.id),
            "team": teams[row.team_id],
            "version": row.version,
            "deleted": row.deleted,
            "data": None if row.deleted else row.data,
            "updated_at": row.updated_at.isoformat(),
        }
        for row in rows
    ]
    return {"changes": changes, "cursor": encode_cursor(last, team_ids), "has_more": has_more}


# --- record type versions ---------------------------------------------------------------------


def note_record_types_fetched(*, device: Device, record_types: list[RecordType]) -> None:
    """Remember the versions a device was served by GET /record-types. Writes only what changed."""
    _note_versions(device=device, versions={rt.pk: rt.schema_version for rt in record_types}, field="fetched_version")


def note_pushed_versions(*, device: Device, actions: list[Action]) -> None:
    """Remember the version each record type's last action in a push was captured with (absent:
    the current one). Outside the actions' transactions: it is a summary for the admin, and the
    ledger has each action's own answer."""
    if not actions:
        return
    claimed: dict[str, int | None] = {}
    for action in actions:
        claimed[action.type] = action.schema_version
    versions = {}
    for pk, key, current in RecordType.objects.filter(key__in=claimed).values_list("pk", "key", "schema_version"):
        version = claimed[key] or current
        if 1 <= version <= current:
            versions[pk] = version
    _note_versions(device=device, versions=versions, field="pushed_version")


def _note_versions(*, device: Device, versions: dict[int, int], field: str) -> None:
    if not versions:
        return
    known = dict(DeviceRecordType.objects.filter(device=device).values_list("record_type_id", field))
    new = [type_id for type_id in versions if type_id not in known]
    if new:
        # Two requests of one device at once both insert; the unique constraint keeps one row.
        DeviceRecordType.objects.bulk_create(
            [DeviceRecordType(device=device, record_type_id=type_id, **{field: versions[type_id]}) for type_id in new],
            ignore_conflicts=True,
        )
    for type_id, version in versions.items():
        if type_id in known and known[type_id] != version:
            DeviceRecordType.objects.filter(device=device, record_type_id=type_id).update(
                **{field: version, "updated_at": timezone.now()}
            )


def record_types_changed(*, device: Device) -> bool:
    """Whether some record type is at a newer schema version than the device last fetched (or
    is one it never fetched): the pull's signal to refresh its record types."""
    fetched = DeviceRecordType.objects.filter(
        device=device, record_type=OuterRef("pk"), fetched_version__gte=OuterRef("schema_version")
    )
    return RecordType.objects.filter(~Exists(fetched)).exists()


def device_schema_uses(record_type: RecordType, *, limit: int = 200) -> list[schemas.DeviceUse]:
    """The devices (not revoked) that fetched or pushed a record type, oldest version first, for
    the record type's admin page (records may not import us; sync/apps.py hands it this)."""
    rows = (
        DeviceRecordType.objects.filter(record_type=record_type, device__revoked_at__isnull=True)
        .select_related("device__user")
        .order_by("fetched_version", "device__name")[:limit]
    )
    return [
        schemas.DeviceUse(
            device_id=row.device.id,
            device=row.device.name,
            username=row.device.user.get_username(),
            fetched_version=row.fetched_version,
            pushed_version=row.pushed_version,
            last_seen=row.device.last_seen,
        )
        for row in rows
    ]
