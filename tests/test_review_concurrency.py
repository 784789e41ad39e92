"""Deciding a review while someone else acts on it, with real threads on MariaDB: the review row
lock decides, and the loser is told why instead of deciding a second time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from approvals.models import Review, ReviewState
from approvals.services import DecisionError, decide_review
from audit.models import AuditEvent
from records.models import Record, RecordVersion
from tests import concurrency
from tests.reviewing import INSPECTION, inspection_conflict, second_officer, update

pytestmark = [pytest.mark.mariadb, pytest.mark.django_db(transaction=True)]


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at the same moment; each gives back its value or the DecisionError code."""
    return [r.code if isinstance(r, DecisionError) else r for r in concurrency.run_together(*calls)]


@pytest.mark.parametrize("round_", range(3))
def test_two_officers_deciding_one_review_at_the_same_moment_give_one_decision(device_for, round_: int) -> None:
    conflict = inspection_conflict(device_for)
    olivia, oscar = User.objects.get(username="olivia"), second_officer()
    review_id = conflict.review.pk

    results = run_together(
        lambda: decide_review(
            review_id=review_id, officer=olivia, decision="approve", seen_version=2, choices={"odometer_km": "device"}
        ),
        lambda: decide_review(
            review_id=review_id,
            officer=oscar,
            decision="approve",
            seen_version=2,
            choices={"odometer_km": {"value": 1230}},
            note="Odometer from the photo.",
        ),
    )

    winners = [(officer, r) for officer, r in zip((olivia, oscar), results, strict=True) if isinstance(r, Review)]
    losers = [r for r in results if not isinstance(r, Review)]
    assert len(winners) == 1, results
    assert losers[0] in ("already_decided", "stale_review"), results
    winner, decided = winners[0]
    review = Review.objects.get(pk=review_id)
    assert review.decided_by == winner
    assert review.state == decided.state
    assert list(RecordVersion.objects.filter(record_id=conflict.record).values_list("version", flat=True)) == [3, 2, 1]
    odometer = 1250 if winner == olivia else 1230
    assert Record.objects.get(pk=conflict.record).data == {
        **INSPECTION,
        "odometer_km": odometer,
        "inspector": "Alice A.",
        "passed": False,
    }
    assert AuditEvent.objects.filter(verb="review.decided", object_id=str(review_id)).count() == 1
    assert AuditEvent.objects.filter(object_id=str(conflict.record), source="approval").count() == 1


@pytest.mark.parametrize("round_", range(3))
def test_a_decision_and_a_device_edit_at_the_same_moment_lose_nothing(device_for, round_: int) -> None:
    conflict = inspection_conflict(device_for, both_changed=False)
    olivia = User.objects.get(username="olivia")
    alice = device_for("alice")

    decision, edit = run_together(
        lambda: decide_review(review_id=conflict.review.pk, officer=olivia, decision="approve", seen_version=2),
        lambda: update(alice, conflict.record, 2, {"inspector": "Alice B."}),
    )

    record = Record.objects.get(pk=conflict.record)
    review = Review.objects.get(pk=conflict.review.pk)
    assert edit["status"] in ("applied", "merged"), edit
    assert record.data["inspector"] == "Alice B."
    if isinstance(decision, Review):
        # The decision committed first: alice's edit from v2 merged on top of it.
        assert review.state == ReviewState.APPROVED
        assert (record.version, record.data["passed"]) == (4, False)
    else:
        # Alice's edit committed first: the officer's decision was made on a version that is gone.
        assert decision == "stale_review", decision
        assert review.state == ReviewState.PENDING
        assert (record.version, record.data["passed"]) == (3, True)
    assert list(RecordVersion.objects.filter(record=record).values_list("version", flat=True)) == list(
        range(record.version, 0, -1)
    )
