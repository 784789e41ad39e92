"""Record-type schema versions (docs/schema-versions.md).

A record type's schema changes while devices are offline with the old one. Every version is kept
(`RecordTypeVersion`, immutable), each with the rules that bring data of the version before it to
this one:

    {"renames": {"old": "new"}, "drop": ["field"], "defaults": {"field": value}}

applied in that order, one version step after another. Renames and drops apply to any data; a
default fills a missing field of a whole record (a create, or a stored record), never of an
update, which carries only the fields it changes.

Stored records are upgraded when read and stored in the current version when next written
(`Record.schema_version` says which version their data is in). This module holds the rules, the
check that a schema change leaves existing data valid, and adding a version. `records` may not
import `approvals` or `sync`; they tell this module, at startup, where to find the pending
reviews and the devices' versions (`set_pending_proposals_source`, `set_device_uses_source`).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from jsonschema import Draft202012Validator, FormatChecker

from audit.services import record_event
from records.models import Record, RecordType, RecordTypeVersion

RULE_KEYS = ("renames", "drop", "defaults")
# How many problems a refusal lists; the count says how many there are in all.
SHOWN_PROBLEMS = 20


# --- validation -------------------------------------------------------------------------------


def format_errors(validator: Draft202012Validator, data: Any) -> dict[str, list[str]]:
    """JSON Schema errors keyed by field path (`data.items.0.qty`)."""
    errors: dict[str, list[str]] = {}
    for error in validator.iter_errors(data):
        parts = ["data", *(str(p) for p in error.absolute_path)]
        if error.validator == "required" and isinstance(error.instance, dict):
            for missing in error.validator_value:
                if missing not in error.instance:
                    errors.setdefault(".".join([*parts, str(missing)]), []).append("This field is required.")
            continue
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - allowed):
                errors.setdefault(".".join([*parts, str(extra)]), []).append("Unknown field.")
            continue
        errors.setdefault(".".join(parts), []).append(error.message)
    return errors


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json), format_checker=FormatChecker())


def validator(schema: dict[str, Any], *, partial: bool = False) -> Draft202012Validator:
    """A (cached) validator of `schema`. `partial` is for an update, which carries only the fields
    it changes: the record-level `required` is not checked (each value still is)."""
    if partial:
        schema = {k: v for k, v in schema.items() if k != "required"}
    return _validator(json.dumps(schema, sort_keys=True))


def validation_errors(schema: dict[str, Any], data: Any, *, partial: bool = False) -> dict[str, list[str]]:
    return format_errors(validator(schema, partial=partial), data)


def properties(schema: Any) -> dict[str, Any]:
    found = schema.get("properties", {}) if isinstance(schema, dict) else {}
    return found if isinstance(found, dict) else {}


def required(schema: Any) -> list[str]:
    found = schema.get("required", []) if isinstance(schema, dict) else []
    return [name for name in found if isinstance(name, str)] if isinstance(found, list) else []


# --- rules ------------------------------------------------------------------------------------


def rules_errors(rules: Any, *, previous: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """What is wrong with upgrade rules from the `previous` schema to `schema` (empty: nothing)."""
    if rules in (None, {}):
        return []
    if not isinstance(rules, dict):
        return ['The upgrade rules must be a JSON object: {"renames": {...}, "drop": [...], "defaults": {...}}.']
    problems = [f"Unknown rule {key!r}; use renames, drop and defaults." for key in rules if key not in RULE_KEYS]
    old, new = properties(previous), properties(schema)
    renames = rules.get("renames", {})
    if not isinstance(renames, dict) or not all(isinstance(v, str) for v in renames.values()):
        problems.append('"renames" must be an object of old field name -> new field name.')
        renames = {}
    for before, after in renames.items():
        if before not in old:
            problems.append(f"renames: {before!r} is not a field of the previous version.")
        if after not in new:
            problems.append(f"renames: {after!r} is not a field of the new schema.")
        if before in new and before not in renames.values():
            problems.append(f"renames: {before!r} is still a field of the new schema; rename it or keep it.")
    drop = rules.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(name, str) for name in drop):
        problems.append('"drop" must be a list of field names.')
        drop = []
    for name in drop:
        if name not in old:
            problems.append(f"drop: {name!r} is not a field of the previous version.")
        if name in new:
            problems.append(f"drop: {name!r} is still a field of the new schema.")
    defaults = rules.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append('"defaults" must be an object of field name -> value.')
        defaults = {}
    for name, value in defaults.items():
        if name not in new:
            problems.append(f"defaults: {name!r} is not a field of the new schema.")
            continue
        for path, messages in validation_errors(
            {"type": "object", "properties": {name: new[name]}}, {name: value}
        ).items():
            problems.append(f"defaults: {path.removeprefix('data.')}: {'; '.join(messages)}")
    return problems


def apply_rules(
    data: dict[str, Any], steps: Iterable[dict[str, Any]], *, whole: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`data` brought through each step's rules, and the values the drops removed.

    `whole` is a whole record (a create, a stored record): defaults fill its missing fields. An
    update is not whole: a default there would overwrite the record's value."""
    data = dict(data)
    dropped: dict[str, Any] = {}
    for rules in steps:
        # All renames of a step at once, so {"a": "b", "b": "a"} swaps.
        moved = {new: data.pop(old) for old, new in (rules.get("renames") or {}).items() if old in data}
        for name, value in moved.items():
            if name in data:
                dropped[name] = data[name]
            data[name] = value
        for name in rules.get("drop") or []:
            if name in data:
                dropped[name] = data.pop(name)
        if whole:
            for name, value in (rules.get("defaults") or {}).items():
                if name not in data:
                    data[name] = copy.deepcopy(value)
    return data, dropped


def _steps(record_type_id: int, from_version: int, to_version: int) -> list[dict[str, Any]]:
    """The rules of every version after `from_version` up to `to_version`, in order. A version
    with no stored row (a type that predates versioning) has no rules."""
    if from_version >= to_version:
        return []
    rows = dict(
        RecordTypeVersion.objects.filter(
            record_type_id=record_type_id, version__gt=from_version, version__lte=to_version
        ).values_list("version", "upgrade")
    )
    return [rows.get(version) or {} for version in range(from_version + 1, to_version + 1)]


def upgrade(
    record_type: RecordType, data: dict[str, Any], *, from_version: int, whole: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`data` of `from_version` in the type's current version, and the values dropped on the way."""
    steps = _steps(record_type.pk, from_version, record_type.schema_version)
    return apply_rules(data, steps, whole=whole) if steps else (dict(data), {})


def version_schema(record_type: RecordType, version: int) -> dict[str, Any] | None:
    if version == record_type.schema_version:
        return record_type.schema
    found = (
        RecordTypeVersion.objects.filter(record_type=record_type, version=version)
        .values_list("schema", flat=True)
        .first()
    )
    return found if isinstance(found, dict) else None


def bring_forward(records: Iterable[Record], *, types: dict[int, RecordType] | None = None) -> None:
    """Read stored records in their type's current version (in memory: the rows are rewritten in
    the current version by their next write). One query for any number of records. `types`: the
    records' types by id, when they were not loaded with the records."""

    def current_version(record: Record) -> int:
        return (types[record.type_id] if types is not None else record.type).schema_version

    behind = [r for r in records if r.schema_version < current_version(r)]
    if not behind:
        return
    rules: dict[tuple[int, int], dict[str, Any]] = {
        (type_id, version): upgrade_rules
        for type_id, version, upgrade_rules in RecordTypeVersion.objects.filter(
            record_type_id__in={r.type_id for r in behind}
        ).values_list("record_type_id", "version", "upgrade")
    }
    for record in behind:
        current = current_version(record)
        steps = [rules.get((record.type_id, v)) or {} for v in range(record.schema_version + 1, current + 1)]
        record.data, _ = apply_rules(record.data, steps, whole=True)
        record.schema_version = current


def current_data(record: Record) -> dict[str, Any]:
    """The record's data in its type's current schema version."""
    bring_forward([record])
    return record.data


# --- who else holds data of a type --------------------------------------------------------------


@dataclass(frozen=True)
class PendingProposal:
    """An action waiting for review (approvals), as the schema check needs it."""

    review_id: uuid.UUID
    record_id: uuid.UUID
    op: str
    data: dict[str, Any]
    schema_version: int


@dataclass(frozen=True)
class DeviceUse:
    """The versions of one record type a device last fetched and last pushed with (sync)."""

    device_id: uuid.UUID
    device: str
    username: str
    fetched_version: int | None
    pushed_version: int | None
    last_seen: datetime | None


def _no_proposals(record_type: RecordType) -> Iterable[PendingProposal]:
    return ()


def _no_devices(record_type: RecordType) -> list[DeviceUse]:
    return []


_pending_proposals: Callable[[RecordType], Iterable[PendingProposal]] = _no_proposals
_device_uses: Callable[[RecordType], list[DeviceUse]] = _no_devices


def set_pending_proposals_source(source: Callable[[RecordType], Iterable[PendingProposal]]) -> None:
    global _pending_proposals
    _pending_proposals = source


def set_device_uses_source(source: Callable[[RecordType], list[DeviceUse]]) -> None:
    global _device_uses
    _device_uses = source


def device_uses(record_type: RecordType) -> list[DeviceUse]:
    return _device_uses(record_type)


# --- checking a schema change -------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # "record" | "review"
    object_id: uuid.UUID
    errors: dict[str, list[str]]

    def describe(self) -> str:
        found = "; ".join(f"{path}: {', '.join(messages)}" for path, messages in sorted(self.errors.items()))
        return f"{self.kind} {self.object_id}: {found}"


@dataclass(frozen=True)
class Impact:
    problems: list[Problem]  # the first SHOWN_PROBLEMS
    total: int
    # Fields that are required by the new schema and missing after the rules: a default fixes them.
    missing: list[str]

    @property
    def ok(self) -> bool:
        return self.total == 0


def schema_change_impact(record_type: RecordType, *, schema: dict[str, Any], rules: dict[str, Any]) -> Impact:
    """Which existing records (tombstones aside) and which pending-review actions of the type would
    not be valid in the new schema once brought forward by the existing rules and `rules`."""
    current = record_type.schema_version
    steps_from: dict[int, list[dict[str, Any]]] = {}

    def steps(version: int) -> list[dict[str, Any]]:
        if version not in steps_from:
            steps_from[version] = [*_steps(record_type.pk, version, current), rules]
        return steps_from[version]

    problems: list[Problem] = []
    total = 0
    missing: set[str] = set()
    whole_validator, partial_validator = validator(schema), validator(schema, partial=True)

    def check(kind: str, object_id: uuid.UUID, data: Any, version: int, *, whole: bool) -> None:
        nonlocal total
        if not isinstance(data, dict):
            return
        upgraded, _ = apply_rules(data, steps(min(version, current)), whole=whole)
        errors = format_errors(whole_validator if whole else partial_validator, upgraded)
        if not errors:
            return
        total += 1
        missing.update(name for name in required(schema) if name not in upgraded and whole)
        if len(problems) < SHOWN_PROBLEMS:
            problems.append(Problem(kind, object_id, errors))

    stored = Record.objects.filter(type=record_type, deleted=False).values_list("id", "data", "schema_version")
    for record_id, data, version in stored.order_by("pk").iterator(chunk_size=2000):
        check("record", record_id, data, version, whole=True)
    for proposal in _pending_proposals(record_type):
        if proposal.op != "delete":
            check("review", proposal.review_id, proposal.data, proposal.schema_version, whole=proposal.op == "create")
    return Impact(problems=problems, total=total, missing=sorted(missing))


# --- adding a version ---------------------------------------------------------------------------


def next_version(record_type: RecordType) -> int:
    """Lock the type (two officers saving at once get consecutive versions) and return the number
    of the version about to be added. The version being replaced gets its row first if it has
    none (a type made before versions were kept), so devices still on it can be upgraded."""
    stored = RecordType.objects.select_for_update().get(pk=record_type.pk)
    if not RecordTypeVersion.objects.filter(record_type=stored, version=stored.schema_version).exists():
        RecordTypeVersion.objects.create(record_type=stored, version=stored.schema_version, schema=stored.schema)
    return stored.schema_version + 1


def record_version(
    *, record_type: RecordType, rules: dict[str, Any], by: User | None, source: str = "admin", request_id: str = ""
) -> RecordTypeVersion:
    """Store the saved type's current schema as its version `record_type.schema_version` with the
    rules from the version before, and journal it (a first version is the type's creation, which
    its creator journals). Runs in the caller's transaction, after the type was saved with the new
    schema and number (`next_version`)."""
    version = RecordTypeVersion.objects.create(
        record_type=record_type,
        version=record_type.schema_version,
        schema=record_type.schema,
        upgrade=rules or {},
        created_by=by,
    )
    if record_type.schema_version == 1:
        return version
    record_event(
        verb="record_type.version_added",
        source=source,
        actor=by,
        object_type="record_type",
        object_id=str(record_type.pk),
        request_id=request_id,
        record_type=record_type.key,
        changes={
            "schema_version": [record_type.schema_version - 1, record_type.schema_version],
            "upgrade": [None, rules or {}],
        },
    )
    return version


def change_schema(
    *, record_type: RecordType, schema: dict[str, Any], rules: dict[str, Any], by: User | None, source: str = "admin"
) -> RecordTypeVersion:
    """Give a saved record type a new schema version (seed_demo, tests; the admin does the same in
    its save). No check here: callers that must refuse a harmful change call
    `schema_change_impact` first."""
    with transaction.atomic():
        record_type.schema_version = next_version(record_type)
        record_type.schema = schema
        record_type.save()
        return record_version(record_type=record_type, rules=rules, by=by, source=source)
