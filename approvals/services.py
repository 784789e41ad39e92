"""Reviews: opening one for a device action that waits, and the officer's decision.

`decide_review` is the one way a review is decided (the admin page, the bulk action and tests
all call it). It locks the review and the record, checks the state, the four-eyes rule and the
record version the officer looked at, applies through records.services.apply_change (a new
version with source `approval`) and journals the decision, all in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from approvals.models import Review, ReviewState
from attachments import services as attachments
from audit.services import record_event
from records import schemas
from records.models import Record, RecordType, RecordVersion
from records.services import (
    BOTH_CHANGED,
    DEVICE_ONLY,
    NEEDS_VALUE,
    Actor,
    Change,
    ReviewRequest,
    apply_change,
    classify,
    journal,
    referenced_attachments,
)

Decision = Literal["approve", "reject"]
# Per field: keep the server's value, take the device's, or an officer's own value.
Choice = Literal["server", "device"] | dict[str, Any]


class DecisionError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def open_review(*, actor: Actor, change: Change, request: ReviewRequest) -> Review:
    """Record the waiting action (in the caller's transaction, beside its ledger entry). The files
    its proposal references are held from the sweeper until it is decided: nothing links them yet."""
    review = Review.objects.create(
        reason=request.reason,
        record_type=request.record_type,
        team=request.team,
        record_id=change.record_id,
        op=change.op,
        action_id=change.action_id,
        device_id=actor.device_id,
        submitted_by=actor.user,
        captured_at=change.captured_at,
        base_version=request.base_version,
        base_data=request.base_data,
        server_version=request.server_version,
        server_data=request.server_data,
        proposed_data=request.proposed,
        classification=request.classification,
        schema_version=request.record_type.schema_version,
        detail=request.detail,
    )
    journal(
        actor,
        change,
        verb="review.opened",
        object_type="review",
        object_id=review.id,
        record_type=request.record_type.key,
        team=request.team.slug,
        changes={"record": [None, str(change.record_id)], "op": [None, change.op], "reason": [None, request.reason]},
    )
    attachments.hold(review_id=review.id, attachment_ids=referenced_attachments(request.record_type, request.proposed))
    return review


def default_choices(review: Review) -> dict[str, Choice]:
    """What "approve" means when the officer chose nothing: the device's value for every field it
    changed. Fields changed on both sides have no default; the officer must choose."""
    return {
        name: "device"
        for name, how in review.classification.items()
        if how == DEVICE_ONLY and name in review.proposed_data
    }


def can_decide(review: Review, officer: User) -> bool:
    return officer.has_perm("approvals.decide_review") and review.submitted_by_id != officer.pk


@dataclass(frozen=True)
class Resolution:
    data: dict[str, Any]  # the record's data after the decision (for create/update)
    state: str  # approved | resolved


def snapshots(review: Review) -> tuple[dict[str, Any], dict[str, Any]]:
    """The review's base and proposed data in its type's current schema version: the type may
    have changed since the review opened (records/schemas.py). The review keeps what was sent."""
    record_type = review.record_type
    if review.schema_version == record_type.schema_version:
        return review.base_data, review.proposed_data
    base, _ = schemas.upgrade(
        record_type, review.base_data, from_version=review.schema_version, whole=review.base_version is not None
    )
    proposed, _ = schemas.upgrade(
        record_type, review.proposed_data, from_version=review.schema_version, whole=review.op == "create"
    )
    return base, proposed


def live_classification(review: Review, current: dict[str, Any]) -> dict[str, str]:
    """The per-field classification against the record as it is now (it may have moved since the
    review opened), plus the fields the current schema requires that nobody has given a value."""
    base, proposed = snapshots(review)
    classification = classify(base, current, proposed)
    if review.op != "delete":
        for name in schemas.required(review.record_type.schema):
            if name not in current and name not in proposed:
                classification[name] = NEEDS_VALUE
    return classification


def resolve(review: Review, current: dict[str, Any], choices: dict[str, Choice]) -> Resolution:
    classification = live_classification(review, current)
    missing = [name for name, how in classification.items() if how == BOTH_CHANGED and name not in choices]
    if missing:
        raise DecisionError(
            "choice_required", f"Choose a value for the fields changed on both sides: {', '.join(missing)}."
        )
    unset = [name for name, how in classification.items() if how == NEEDS_VALUE and name not in choices]
    if unset:
        raise DecisionError("choice_required", f"Enter a value for the required fields: {', '.join(unset)}.")
    _, proposed = snapshots(review)
    data = dict(current)
    all_device = True
    for name, how in classification.items():
        choice = choices.get(name, "device" if how == DEVICE_ONLY else "server")
        if choice == "device":
            if name in proposed:
                data[name] = proposed[name]
        elif choice == "server":
            if name in proposed and proposed[name] != current.get(name):
                all_device = False
        elif isinstance(choice, dict) and "value" in choice:
            data[name] = choice["value"]
            if choice["value"] != proposed.get(name):
                all_device = False
        else:
            raise DecisionError("invalid_choice", f"{name}: choose server, device or a value.")
    return Resolution(data=data, state=ReviewState.APPROVED if all_device else ReviewState.RESOLVED)


def decide_review(
    *,
    review_id: uuid.UUID,
    officer: User,
    decision: Decision,
    seen_version: int | None,
    choices: dict[str, Choice] | None = None,
    note: str = "",
) -> Review:
    """Decide a pending review. `seen_version` is the record version the officer looked at; if the
    record moved since, the decision is refused (`stale_review`) and must be re-examined."""
    with transaction.atomic():
        # The review row alone: select_related would lock the type and team rows too (no FOR
        # UPDATE OF on MariaDB) and deadlock with a push that holds the record.
        review = Review.objects.select_for_update().get(pk=review_id)
        if not officer.has_perm("approvals.decide_review"):
            raise DecisionError("permission_denied", "Only compliance officers decide reviews.")
        if review.state != ReviewState.PENDING:
            raise DecisionError("already_decided", f"This review is already {review.state}.")
        if review.submitted_by_id == officer.pk:
            raise DecisionError("own_edit", "Four eyes: you cannot decide a review of your own edit.")
        record = Record.objects.select_for_update().filter(pk=review.record_id).first()
        current_version = record.version if record is not None else None
        if seen_version != current_version:
            raise DecisionError(
                "stale_review",
                f"The record changed since you looked at it (now version {current_version}); re-examine the review.",
            )
        state: str
        result_version = current_version
        if decision == "reject":
            if not note.strip():
                raise DecisionError("note_required", "Say why the edit is rejected.")
            state = ReviewState.REJECTED
        elif review.op != "create" and record is None:
            state = ReviewState.SUPERSEDED
        else:
            state, result_version = _apply_decision(review, record, officer, choices or {})
        review.state = state
        review.decided_by = officer
        review.decided_at = decided_at = timezone.now()
        review.decided_on_version = current_version
        review.note = note
        review.resolution = {k: v for k, v in (choices or {}).items()} or None
        review.result_version = result_version
        review.save()
        attachments.release(review_id=review.id, at=decided_at)
        record_event(
            verb="review.decided",
            source="approval",
            actor=officer,
            object_type="review",
            object_id=review.id,
            action_id=review.action_id,
            record_type=review.record_type.key,
            team=review.team.slug,
            changes={"state": [ReviewState.PENDING, state], "note": [None, note or None]},
        )
    return review


def _apply_decision(
    review: Review, record: Record | None, officer: User, choices: dict[str, Choice]
) -> tuple[str, int | None]:
    actor = Actor(user=officer, source="approval")
    state: str
    if review.op == "delete":
        state, data = ReviewState.APPROVED.value, {}
    else:
        current = schemas.current_data(record) if record is not None else {}
        resolution = resolve(review, current, choices)
        state = resolution.state
        data = (
            resolution.data
            if review.op == "create"
            else {k: v for k, v in resolution.data.items() if current.get(k) != v}
        )
    outcome = apply_change(
        actor=actor,
        change=Change(
            op=review.op,  # type: ignore[arg-type]
            record_id=review.record_id,
            type_key=review.record_type.key,
            data=data,
            captured_at=review.captured_at,
            base_version=record.version if record is not None else None,
            team_slug=review.team.slug,
            action_id=review.action_id,
        ),
    )
    if outcome.error is not None:
        raise DecisionError(outcome.error.code, outcome.error.message)
    return state, outcome.version


def review_decision(review_id: uuid.UUID) -> dict[str, Any] | None:
    """The decision of a review as a device sees it (None while pending)."""
    review = Review.objects.select_related("decided_by").filter(pk=review_id).first()
    if review is None or review.state == ReviewState.PENDING:
        return None
    data = None
    if review.state in (ReviewState.APPROVED, ReviewState.RESOLVED):
        # A tombstone carries no data on the wire (as in pull): an approved delete says null.
        row = (
            RecordVersion.objects.filter(record_id=review.record_id, version=review.result_version or 0)
            .values_list("data", "deleted")
            .first()
        )
        data = row[0] if row is not None and not row[1] else None
    return {
        "state": review.state,
        "decided_by": review.decided_by.get_username() if review.decided_by else None,
        "decided_at": review.decided_at.isoformat() if review.decided_at else None,
        "note": review.note,
        "version": review.result_version,
        "data": data,
    }


def pending_proposals(record_type: RecordType) -> list[schemas.PendingProposal]:
    """The actions of a type waiting for review, for the check of a schema change (records may
    not import us; approvals/apps.py hands it this)."""
    return [
        schemas.PendingProposal(
            review_id=review_id, record_id=record_id, op=op, data=data, schema_version=schema_version
        )
        for review_id, record_id, op, data, schema_version in Review.objects.filter(
            record_type=record_type, state=ReviewState.PENDING
        ).values_list("id", "record_id", "op", "proposed_data", "schema_version")
    ]


__all__ = ["BOTH_CHANGED", "DecisionError", "decide_review", "open_review", "review_decision"]
