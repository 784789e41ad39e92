"""The one service that applies a change to a record.

Every writer calls `apply_change`: the device push, the admin, and (later) the approvals. It
validates, resolves conflicts by the record type's policy, writes the record, its version row and
its audit event in the caller's transaction, and returns an `Outcome` value. A rejection is a
value too; nothing is written for it.
"""

from __future__ import annotations

import math
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from jsonschema import Draft202012Validator, FormatChecker

from attachments import services as attachments
from audit.models import AuditEvent
from audit.services import diff, record_event
from records import batch, schemas
from records.models import ConflictPolicy, Record, RecordType, RecordVersion, Team

Op = Literal["create", "update", "delete"]
Status = Literal["applied", "merged", "pending_review", "rejected"]

ZERO_UUID = uuid.UUID(int=0)


@dataclass(frozen=True)
class Actor:
    """Who is writing, from where. `device_id` is a plain UUID: `records` knows nothing of `sync`."""

    user: User
    source: str  # audit.models.Source
    device_id: uuid.UUID | None = None
    request_id: str = ""
    # The teams this actor may write into, by slug; None means every team (admin, approvals).
    teams: dict[str, Team] | None = None

    @classmethod
    def for_device(cls, *, user: User, device_id: uuid.UUID, request_id: str = "") -> Actor:
        teams = {team.slug: team for team in Team.objects.filter(members=user)}
        return cls(user=user, source="device", device_id=device_id, request_id=request_id, teams=teams)


@dataclass(frozen=True)
class Change:
    op: Op
    record_id: uuid.UUID
    type_key: str
    data: dict[str, Any]
    captured_at: datetime  # already corrected for the device's clock offset
    base_version: int | None = None
    team_slug: str | None = None
    action_id: uuid.UUID | None = None
    # The version of the type's schema the data was captured with; None: the current one.
    schema_version: int | None = None
    # Values the schema upgrade removed from `data` (records/schemas.py); kept on the version row.
    dropped: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChangeError:
    code: str
    message: str
    fields: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "fields": self.fields}


# How each field stands between the base version, the server now and the device's proposal.
UNCHANGED, DEVICE_ONLY, SERVER_ONLY, BOTH_CHANGED = "unchanged", "device_only", "server_only", "both_changed"
# A field the current schema requires that neither the record nor the proposal has (a field added
# after the device captured): an officer must give it a value.
NEEDS_VALUE = "needs_value"


@dataclass(frozen=True)
class ReviewRequest:
    """A change that waits for a compliance officer. `records` returns it as a value; the caller
    (sync, or the admin) hands it to `approvals`, which `records` never imports."""

    reason: str  # "review_all" | "conflict" | "deleted" | "schema_upgrade"
    record_type: RecordType
    team: Team
    base_version: int | None
    base_data: dict[str, Any]
    server_version: int | None
    server_data: dict[str, Any]
    proposed: dict[str, Any]
    classification: dict[str, str]
    # For "schema_upgrade": the versions and the errors that kept the action from applying.
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    status: Status
    record_id: uuid.UUID
    version: int | None = None
    data: dict[str, Any] | None = None
    error: ChangeError | None = None
    deleted: bool = False
    review: ReviewRequest | None = None

    @property
    def applied(self) -> bool:
        return self.status in ("applied", "merged")


def journal(actor: Actor, change: Change, **event: Any) -> AuditEvent:
    """Journal what `actor` did with `change`: who, from which device and request, the change's
    (clock-corrected) capture time and action id; `event` says what happened to which object."""
    return record_event(
        source=actor.source,
        actor=actor.user,
        device_id=actor.device_id,
        request_id=actor.request_id,
        occurred_at=change.captured_at,
        action_id=change.action_id,
        **event,
    )


class NeedsReview(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def classify(base: dict[str, Any], server: dict[str, Any], proposed: dict[str, Any]) -> dict[str, str]:
    """Per field: changed by the device only, by the server only, by both, or by neither."""
    result = {}
    for name in sorted(set(base) | set(server) | set(proposed)):
        device_changed = name in proposed and proposed[name] != base.get(name)
        server_changed = server.get(name) != base.get(name)
        if device_changed and server_changed and proposed[name] != server.get(name):
            result[name] = BOTH_CHANGED
        elif device_changed and not server_changed:
            result[name] = DEVICE_ONLY
        elif server_changed and not device_changed:
            result[name] = SERVER_ONLY
        else:
            result[name] = UNCHANGED
    return result


class Rejected(Exception):
    def __init__(
        self, code: str, message: str, *, fields: dict[str, list[str]] | None = None, current: Record | None = None
    ) -> None:
        super().__init__(message)
        self.error = ChangeError(code, message, fields or {})
        self.current = current


# --- validation -----------------------------------------------------------------------------

_validators: dict[tuple[int, int, datetime | None], Draft202012Validator] = {}


def _validator(record_type: RecordType) -> Draft202012Validator:
    key = (record_type.pk, record_type.schema_version, record_type.updated_at)
    validator = _validators.get(key)
    if validator is None:
        validator = Draft202012Validator(record_type.schema, format_checker=FormatChecker())
        _validators[key] = validator
    return validator


def schema_errors(record_type: RecordType, data: dict[str, Any]) -> dict[str, list[str]]:
    """JSON Schema errors keyed by field path (`data.items.0.qty`)."""
    return schemas.format_errors(_validator(record_type), data)


def _non_finite_numbers(data: Any) -> list[str]:
    """Paths of NaN and Infinity in `data`. JSON has neither, so no database column takes them (the
    JSON check refused the row, which read as "the record exists"); a schema's minimum/maximum
    does not catch NaN. The device API refuses them when parsing; the admin's JSON fields and a
    reviewer's typed value do not."""
    found, stack = [], [("data", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            found.append(path)
        elif isinstance(value, dict):
            stack.extend((f"{path}.{key}", child) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}", child) for index, child in enumerate(value))
    return sorted(found)


def _check_schema(record_type: RecordType, data: dict[str, Any]) -> None:
    errors = schema_errors(record_type, data)
    for path in _non_finite_numbers(data):
        errors.setdefault(path, []).append("Not a finite number: JSON has no NaN or Infinity.")
    if errors:
        raise Rejected("schema_violation", "The record does not match its type's schema.", fields=errors)


# --- attachment references ------------------------------------------------------------------

_ATTACHMENT_REFUSALS = {
    "attachment_not_found": "There is no such attachment (upload it before pushing the record).",
    "attachment_incomplete": "The attachment's upload is not complete.",
    "attachment_rejected": "The attachment was rejected by verification.",
    "attachment_forbidden": "The attachment was uploaded by someone outside the record's team.",
}


def _attachment_values(schema: Any, value: Any, path: str) -> list[tuple[str, Any]]:
    """(field path, value) of every value that the schema marks `"format": "attachment"`,
    following `properties` and `items` (what record schemas use)."""
    if not isinstance(schema, dict):
        return []
    if schema.get("format") == "attachment":
        return [(path, value)]
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for name, sub_schema in schema.get("properties", {}).items():
            if name in value:
                found.extend(_attachment_values(sub_schema, value[name], f"{path}.{name}"))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found.extend(_attachment_values(schema["items"], item, f"{path}.{index}"))
    return found


def _reference_id(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value["id"])) if isinstance(value, dict) else None
    except (KeyError, ValueError):
        return None


def _replace_attachments(schema: Any, value: Any, server: dict[uuid.UUID, dict[str, Any]]) -> Any:
    if not isinstance(schema, dict):
        return value
    if schema.get("format") == "attachment":
        ref = _reference_id(value)
        return server.get(ref, value) if ref is not None else value
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {k: _replace_attachments(properties.get(k), v, server) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_attachments(schema.get("items"), item, server) for item in value]
    return value


def referenced_attachments(record_type: RecordType, data: dict[str, Any]) -> set[uuid.UUID]:
    refs = (_reference_id(value) for _, value in _attachment_values(record_type.schema, data, "data"))
    return {ref for ref in refs if ref is not None}


def _resolve_attachments(
    record_type: RecordType, team: Team, data: dict[str, Any], *, current: dict[str, Any] | None
) -> dict[str, Any]:
    """Check every attachment reference in `data` and put the server's metadata in place of the
    client's claim (invariant 5). A reference the record already holds keeps its stored
    metadata; a new one must exist, be completely uploaded (by a member of the record's team)
    and not be rejected. The referenced rows stay locked until the record commits, so
    verification cannot reject a file between this check and the commit."""
    values = _attachment_values(record_type.schema, data, "data")
    if not values:
        return data
    kept: dict[uuid.UUID, dict[str, Any]] = {}
    for _, value in _attachment_values(record_type.schema, current or {}, "data"):
        ref = _reference_id(value)
        if ref is not None:
            kept[ref] = value
    wanted = {ref for _, value in values if (ref := _reference_id(value)) is not None}
    references = attachments.lock_references(wanted - set(kept))
    owners = {reference.owner_id for reference in references.values()}
    members = set(team.members.filter(pk__in=owners).values_list("pk", flat=True))
    problems: dict[str, list[str]] = {}
    first_code = ""
    for path, value in values:
        ref = _reference_id(value)
        if ref is None or ref in kept:
            continue
        reference = references.get(ref)
        if reference is None:
            code = "attachment_not_found"
        elif reference.state == "uploading":
            code = "attachment_incomplete"
        elif reference.state == "rejected":
            code = "attachment_rejected"
        elif reference.owner_id not in members:
            code = "attachment_forbidden"
        else:
            continue
        first_code = first_code or code
        problems.setdefault(path, []).append(f"{code}: {_ATTACHMENT_REFUSALS[code]}")
    if problems:
        message = _ATTACHMENT_REFUSALS[first_code]
        raise Rejected(first_code, message, fields=problems)
    server = {**kept, **{ref: reference.metadata for ref, reference in references.items()}}
    return dict(_replace_attachments(record_type.schema, data, server))


def user_in_any_team(user: User, team_ids: set[int]) -> bool:
    """For attachments' download check (it may not import us; records/apps.py hands it this)."""
    return Team.objects.filter(pk__in=team_ids, members=user).exists()


def _team_for_create(actor: Actor, change: Change) -> Team:
    if actor.teams is None:
        team = Team.objects.filter(slug=change.team_slug or "").first()
        if team is None:
            raise Rejected(
                "unknown_team", f"There is no team {change.team_slug!r}.", fields={"team": ["Unknown team."]}
            )
        return team
    if change.team_slug:
        if change.team_slug in actor.teams:
            return actor.teams[change.team_slug]
        if Team.objects.filter(slug=change.team_slug).exists():
            raise Rejected(
                "team_forbidden",
                f"You are not a member of team {change.team_slug!r}.",
                fields={"team": ["Not one of your teams."]},
            )
        raise Rejected("unknown_team", f"There is no team {change.team_slug!r}.", fields={"team": ["Unknown team."]})
    if len(actor.teams) == 1:
        return next(iter(actor.teams.values()))
    raise Rejected(
        "team_required",
        "Say which team the record belongs to: you are in more than one team, or none.",
        fields={"team": ["This field is required."]},
    )


def _may_write(actor: Actor, record: Record) -> bool:
    return actor.teams is None or any(team.pk == record.team_id for team in actor.teams.values())


# --- conflict resolution --------------------------------------------------------------------


def _lww_wins(change: Change, record: Record) -> bool:
    """Later (clock-corrected) capture time wins; equal times are broken by the larger action id."""
    incoming = (change.captured_at, change.action_id or ZERO_UUID)
    current = (record.captured_at, record.last_action_id or ZERO_UUID)
    return incoming > current


def _base_data(record: Record, base_version: int) -> dict[str, Any] | None:
    """The data of an earlier version, in the type's current schema version (compared field by
    field with the current data and the device's proposal, which are)."""
    staged = batch.current()
    if staged is not None:
        row = staged.version_data(record, base_version)
    else:
        row = (
            RecordVersion.objects.filter(record=record, version=base_version)
            .values_list("data", "schema_version")
            .first()
        )
    if row is None or not isinstance(row[0], dict):
        return None
    data, _ = schemas.upgrade(record.type, row[0], from_version=row[1], whole=True)
    return data


def _resolve_update(
    record: Record, change: Change, base: dict[str, Any] | None, *, allow_review: bool
) -> tuple[dict[str, Any], Status]:
    """New data for an update whose base_version is stale, or raise Rejected / NeedsReview.

    Field by field, with the field's own policy (its override, else the type's):
    - `review`: any stale edit of the field waits for an officer. Stricter than "changed on both
      sides" on purpose: for a boolean verdict both sides can never change it differently, so a
      both-sides rule would never fire on exactly the fields that need it.
    - in a `merge` type (or a `merge` field), a field the server has not changed since the base
      takes the device's value, whatever its override: nobody else touched it;
    - otherwise last write wins (clock-corrected capture time, ties by action id)."""
    record_type = record.type
    type_merges = record_type.conflict_policy == ConflictPolicy.MERGE
    lww_wins = _lww_wins(change, record)
    data = dict(record.data)
    merged_any = False
    lost: list[str] = []
    for name, value in change.data.items():
        policy = record_type.policy_for(name)
        server_changed = base is None or base.get(name) != record.data.get(name)
        if value == record.data.get(name):
            continue
        if policy == ConflictPolicy.REVIEW and allow_review:
            raise NeedsReview("conflict")
        if (type_merges or policy == ConflictPolicy.MERGE) and not server_changed:
            data[name] = value
            merged_any = True
        elif lww_wins:
            data[name] = value
        else:
            lost.append(name)
    if lost and not merged_any and len(lost) == len([n for n in change.data if change.data[n] != record.data.get(n)]):
        raise Rejected(
            "conflict_lost",
            "A later edit of this record won (last write wins); the record's current state is returned.",
            current=record,
            fields={f"data.{name}": ["Overwritten by a later edit."] for name in lost},
        )
    return data, ("merged" if merged_any or lost else "applied")


# --- the service ----------------------------------------------------------------------------


def apply_change(*, actor: Actor, change: Change) -> Outcome:
    """Apply one create/update/delete atomically (a savepoint inside the caller's transaction)."""
    try:
        # In a staged batch nothing is written before every check has passed (records/batch.py),
        # so a rejection has nothing to undo and needs no savepoint.
        with transaction.atomic() if batch.current() is None else nullcontext():
            return _apply(actor, change)
    except Rejected as rejected:
        current = rejected.current
        visible = current is not None and _may_write(actor, current)
        return Outcome(
            status="rejected",
            record_id=change.record_id,
            version=current.version if visible and current else None,
            data=None if not visible or current is None or current.deleted else schemas.current_data(current),
            deleted=bool(visible and current and current.deleted),
            error=rejected.error,
        )


def _apply(actor: Actor, change: Change) -> Outcome:
    staged = batch.current()
    record_type = (
        staged.record_type(change.type_key) if staged else RecordType.objects.filter(key=change.type_key).first()
    )
    if record_type is None:
        raise Rejected(
            "unknown_type", f"There is no record type {change.type_key!r}.", fields={"type": ["Unknown record type."]}
        )
    captured = record_type.schema_version if change.schema_version is None else change.schema_version
    if captured == record_type.schema_version:
        return _apply_current(actor, change, record_type)
    change = _bring_change_forward(record_type, change, captured)
    try:
        return _apply_current(actor, change, record_type)
    except Rejected as rejected:
        # Valid in the version it was captured with, but not once brought forward: no rule
        # covers it. It waits for an officer instead of being lost.
        if rejected.error.code != "schema_violation":
            raise
        return _schema_upgrade_review(actor, change, record_type, captured=captured, errors=rejected.error.fields)


def _bring_change_forward(record_type: RecordType, change: Change, captured: int) -> Change:
    """Validate the change against the version it was captured with, then bring its data to the
    current version by the rules of the versions in between (records/schemas.py)."""
    current = record_type.schema_version
    if not 1 <= captured < current:
        raise Rejected(
            "unknown_schema_version",
            f"schema_version must be a version of {record_type.key!r}'s schema (1..{current}).",
            fields={"schema_version": ["No such version."]},
        )
    if change.op == "delete":
        return replace(change, schema_version=current)
    schema = schemas.version_schema(record_type, captured)
    if schema is not None:
        errors = schemas.validation_errors(schema, change.data, partial=change.op == "update")
        if errors:
            raise Rejected(
                "schema_violation",
                f"The record does not match version {captured} of its type's schema.",
                fields=errors,
            )
    data, dropped = schemas.upgrade(record_type, change.data, from_version=captured, whole=change.op == "create")
    return replace(change, data=data, schema_version=current, dropped=dropped)


def _schema_upgrade_review(
    actor: Actor, change: Change, record_type: RecordType, *, captured: int, errors: dict[str, list[str]]
) -> Outcome:
    detail = {
        "captured_version": captured,
        "current_version": record_type.schema_version,
        "errors": errors,
        "dropped": change.dropped,
    }
    if change.op == "create":
        team = _team_for_create(actor, change)
        existing = _existing(change.record_id)
        if existing is not None:
            raise Rejected(
                "record_exists",
                "A record with this id already exists.",
                current=existing,
                fields={"record": ["Already exists."]},
            )
        return _pending(change, "schema_upgrade", record_type, team, record=None, detail=detail)
    # Already locked by this transaction (_apply_current got this far to validate the update); no
    # FOR UPDATE here, which with select_related would lock the team row too (see _apply_current).
    record = _existing(change.record_id)
    assert record is not None
    record.type = record_type
    schemas.bring_forward([record])
    return _pending(change, "schema_upgrade", record_type, record.team, record=record, detail=detail)


def _apply_current(actor: Actor, change: Change, record_type: RecordType) -> Outcome:
    # Policies route device edits; officers (admin, approval) apply directly.
    from_device = actor.source == "device"
    review_all = from_device and record_type.conflict_policy == ConflictPolicy.REVIEW_ALL
    if change.op == "create":
        if review_all:
            team = _team_for_create(actor, change)
            _check_schema(record_type, change.data)
            existing = _existing(change.record_id)
            if existing is not None:
                raise Rejected(
                    "record_exists",
                    "A record with this id already exists.",
                    current=existing,
                    fields={"record": ["Already exists."]},
                )
            return _pending(change, "review_all", record_type, team, record=None)
        return _create(actor, change, record_type)

    # Lock the record row alone. With select_related, FOR UPDATE also locks the joined type and
    # team rows (MariaDB has no FOR UPDATE OF): every write of a type would queue on one row, and
    # decide_review (review row, then record) deadlocked with a push (record, then type row).
    staged = batch.current()
    if staged is not None:
        record = staged.record(change.record_id)
    else:
        record = Record.objects.select_for_update().filter(pk=change.record_id).first()
    if record is None or not _may_write(actor, record):
        raise Rejected(
            "record_not_found", "There is no such record in your teams.", fields={"record": ["Unknown record."]}
        )
    if record.type_id != record_type.pk:
        raise Rejected(
            "type_mismatch",
            f"The record is of type {record.type.key!r}.",
            current=record,
            fields={"type": [f"The record is a {record.type.key}."]},
        )
    record.type = record_type
    # Conflicts are resolved, and the record written, in the type's current version.
    schemas.bring_forward([record])
    base_version = change.base_version
    if base_version is None or base_version < 1 or base_version > record.version:
        raise Rejected(
            "invalid_base_version",
            f"base_version must be a version the record has had (1..{record.version}).",
            current=record,
            fields={"base_version": ["No such version."]},
        )
    stale = base_version != record.version
    reviewed = from_device and record_type.conflict_policy in (ConflictPolicy.REVIEW, ConflictPolicy.REVIEW_ALL)

    if record.deleted:
        # A tombstone is final under lww and merge. Under the review policies an edit of a
        # deleted record waits for an officer, who may restore it.
        if change.op == "update" and reviewed:
            _check_schema(record_type, {**record.data, **change.data})
            return _pending(change, "deleted", record_type, record.team, record=record)
        if change.op == "update" and actor.source == "approval":
            data = {**record.data, **change.data}
            _check_schema(record_type, data)
            data = _resolve_attachments(record_type, record.team, data, current=record.data)
            return _write(actor, change, record, data=data, deleted=False, verb="record.restored", status="applied")
        raise Rejected("record_deleted", "The record has been deleted.", current=record)

    # A `review` type's stale edit waits, unless every field it changes has an lww/merge override;
    # a stale delete has no fields to merge and always waits.
    needs_officer = change.op == "delete" or any(
        record_type.policy_for(name) == ConflictPolicy.REVIEW for name in change.data
    )
    if review_all or (reviewed and stale and needs_officer):
        if change.op == "update":
            _check_schema(record_type, {**record.data, **change.data})
        return _pending(change, "review_all" if review_all else "conflict", record_type, record.team, record=record)

    if change.op == "delete":
        # A delete has no fields to merge: against a concurrent edit it is last-write-wins.
        if stale and not _lww_wins(change, record):
            raise Rejected(
                "conflict_lost", "The record was edited later than this delete (last write wins).", current=record
            )
        return _write(actor, change, record, data=record.data, deleted=True, verb="record.deleted", status="applied")

    status: Status = "applied"
    if not stale:
        data = {**record.data, **change.data}
    else:
        try:
            data, status = _resolve_update(record, change, _base_data(record, base_version), allow_review=from_device)
        except NeedsReview as needs:
            _check_schema(record_type, {**record.data, **change.data})
            return _pending(change, needs.reason, record_type, record.team, record=record)
    _check_schema(record_type, data)
    data = _resolve_attachments(record_type, record.team, data, current=record.data)
    if data == record.data:
        # Nothing changes (a repeated edit, or every field lost): journal it, keep the version.
        # Values an old device sent for fields the schema dropped are journalled, not lost.
        journal(
            actor,
            change,
            verb="record.unchanged",
            object_type="record",
            object_id=record.pk,
            changes=_dropped_changes(change),
            record_type=record_type.key,
            team=record.team.slug,
        )
        return Outcome(status=status, record_id=record.pk, version=record.version, data=record.data)
    verb = "record.merged" if status == "merged" else "record.updated"
    return _write(actor, change, record, data=data, deleted=False, verb=verb, status=status)


def _existing(record_id: uuid.UUID) -> Record | None:
    """The record with this id, if any (not locked), with its type and team."""
    staged = batch.current()
    if staged is not None:
        return staged.record(record_id)
    return Record.objects.select_related("type", "team").filter(pk=record_id).first()


def _dropped_changes(change: Change) -> dict[str, Any]:
    return {"(dropped)": [change.dropped, None]} if change.dropped else {}


def _pending(
    change: Change,
    reason: str,
    record_type: RecordType,
    team: Team,
    *,
    record: Record | None,
    detail: dict[str, Any] | None = None,
) -> Outcome:
    """Leave the record as it is and describe what waits for a compliance officer."""
    base = {} if record is None else (_base_data(record, change.base_version or 0) or {})
    server = {} if record is None else record.data
    proposed = change.data if change.op != "delete" else {}
    request = ReviewRequest(
        reason=reason,
        record_type=record_type,
        team=team,
        base_version=change.base_version if record is not None else None,
        base_data=base,
        server_version=record.version if record is not None else None,
        server_data=server,
        proposed=proposed,
        classification=classify(base, server, proposed),
        # Values dropped by the schema upgrade stay with the waiting action.
        detail={**({"dropped": change.dropped} if change.dropped else {}), **(detail or {})},
    )
    return Outcome(
        status="pending_review",
        record_id=change.record_id,
        version=record.version if record is not None else None,
        data=None if record is None or record.deleted else record.data,
        deleted=bool(record and record.deleted),
        review=request,
    )


def _create(actor: Actor, change: Change, record_type: RecordType) -> Outcome:
    team = _team_for_create(actor, change)
    _check_schema(record_type, change.data)
    data = _resolve_attachments(record_type, team, change.data, current=None)
    record = Record(
        id=change.record_id,
        type=record_type,
        team=team,
        data=data,
        schema_version=record_type.schema_version,
        version=1,
        created_by=actor.user,
        created_by_device=actor.device_id,
        updated_by=actor.user,
        updated_by_device=actor.device_id,
        captured_at=change.captured_at,
        last_action_id=change.action_id,
        change_seq=0,
    )
    staged = batch.current()
    try:
        if staged is not None:
            # The batch locked every record it names up front: it knows which exist.
            if not staged.insert(record):
                raise IntegrityError
        else:
            # The primary key decides whether the record exists; a prior SELECT would race.
            with transaction.atomic():
                record.save(force_insert=True)
    except IntegrityError:
        existing = _existing(change.record_id)
        raise Rejected(
            "record_exists",
            "A record with this id already exists.",
            current=existing,
            fields={"record": ["Already exists."]},
        ) from None
    return _write(actor, change, record, data=data, deleted=False, verb="record.created", status="applied", before=None)


def _write(
    actor: Actor,
    change: Change,
    record: Record,
    *,
    data: dict[str, Any],
    deleted: bool,
    verb: str,
    status: Status,
    before: dict[str, Any] | Literal["current"] | None = "current",
) -> Outcome:
    before_data = record.data if before == "current" else before
    version = 1 if change.op == "create" else record.version + 1
    if not deleted:
        attachments.link(
            attachment_ids=referenced_attachments(record.type, data), record_id=record.pk, team_id=record.team_id
        )
    row = RecordVersion(
        record=record,
        version=version,
        data=data,
        schema_version=record.type.schema_version,
        dropped=change.dropped,
        deleted=deleted,
        op=change.op,
        source=actor.source,
        actor=actor.user,
        device_id=actor.device_id,
        action_id=change.action_id,
        captured_at=change.captured_at,
    )
    staged = batch.current()
    if staged is not None:
        staged.add_version(row)
    else:
        row.save(force_insert=True)
    changes = diff(before_data, data)
    if change.op == "delete":
        changes = {"deleted": [False, True]}
    changes.update(_dropped_changes(change))
    # Last, so the chain head (and with it the change feed's clock) is locked only for the
    # few statements between here and commit.
    event = journal(
        actor,
        change,
        verb=verb,
        object_type="record",
        object_id=record.pk,
        changes=changes,
        record_type=record.type.key,
        team=record.team.slug,
    )
    record.data = data
    record.schema_version = record.type.schema_version
    record.deleted = deleted
    record.version = version
    record.updated_by = actor.user
    record.updated_by_device = actor.device_id
    record.captured_at = max(change.captured_at, record.captured_at) if change.op != "create" else change.captured_at
    record.last_action_id = change.action_id
    if staged is not None:
        staged.save(record, event)  # its change_seq is set when the batch's events are numbered
    else:
        record.change_seq = event.seq
        record.save()
    return Outcome(status=status, record_id=record.pk, version=version, data=None if deleted else data, deleted=deleted)
