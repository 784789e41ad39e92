"""A review waiting for an officer holds the files its proposal references: nothing links them
until a record takes them up, so without the hold the sweeper would delete a file that approving
still needs. The hold lasts while the review is pending, and the grace period after its decision."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.services import decide_review
from attachments.models import Attachment, AttachmentHold, AttachmentLink
from attachments.services import sweep
from records.models import Record
from tests.attachments_support import media, png, put, stored_files
from tests.reviewing import INSPECTION, create, update

__all__ = ["media"]


def upload(device, data: bytes) -> str:
    attachment_id = str(uuid.uuid4())
    response = put(device, data, attachment_id=attachment_id)
    assert response.status_code == 201, response.content
    return attachment_id


@pytest.fixture
def photo_review(device_for, media):
    """bob, still on v1 of alice's inspection (now v2), fails it and adds a photo: the verdict has
    the review policy, so the edit (photo included) waits for an officer."""
    alice, bob = device_for("alice"), device_for("bob")
    record = create(alice, "inspection", INSPECTION)
    assert update(alice, record, 1, {"odometer_km": 1200})["version"] == 2
    photo = upload(bob, png(color="green"))
    result = update(bob, record, 1, {"passed": False, "photos": [{"id": photo}]})
    assert result["status"] == "pending_review", result
    return record, uuid.UUID(result["review"]), photo


def long_ago(attachment_id: str) -> None:
    Attachment.objects.filter(pk=attachment_id).update(created_at=timezone.now() - timedelta(days=60))


def test_opening_the_review_holds_the_photo_its_proposal_references(photo_review) -> None:
    _, review_id, photo = photo_review
    hold = AttachmentHold.objects.get(attachment_id=photo)
    assert (hold.review_id, hold.released_at) == (review_id, None)
    assert not AttachmentLink.objects.filter(attachment_id=photo).exists()


def test_the_sweeper_keeps_a_file_a_pending_review_needs_and_approving_takes_it_up(
    photo_review, user, media, django_capture_on_commit_callbacks
) -> None:
    record, review_id, photo = photo_review
    long_ago(photo)  # unlinked, and far past the grace period: only the hold keeps it
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep()["deleted"] == 0
    stored = Attachment.objects.get(pk=photo)
    assert (media / stored.storage_key).exists()

    decide_review(review_id=review_id, officer=user("olivia"), decision="approve", seen_version=2)
    [taken] = Record.objects.get(pk=record).data["photos"]
    assert (taken["id"], taken["sha256"]) == (photo, stored.sha256)
    assert AttachmentLink.objects.filter(attachment_id=photo, record_id=record).exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep(now=timezone.now() + timedelta(days=90))["deleted"] == 0
    assert (media / stored.storage_key).exists()


@pytest.mark.parametrize(
    "decision",
    [
        {"decision": "reject", "note": "Photo of the wrong van."},
        {"decision": "approve", "choices": {"photos": "server"}},  # the verdict without the photo
    ],
    ids=["rejected", "resolved-without-the-photo"],
)
def test_a_file_the_decision_did_not_take_up_gets_the_grace_period_from_the_decision(
    photo_review, user, media, django_capture_on_commit_callbacks, decision
) -> None:
    record, review_id, photo = photo_review
    long_ago(photo)
    decided = decide_review(review_id=review_id, officer=user("olivia"), seen_version=2, **decision)
    assert decided.decided_at is not None
    assert "photos" not in Record.objects.get(pk=record).data
    assert AttachmentHold.objects.get(attachment_id=photo).released_at == decided.decided_at
    key = Attachment.objects.get(pk=photo).storage_key

    with django_capture_on_commit_callbacks(execute=True):
        assert sweep(now=decided.decided_at + timedelta(days=29))["deleted"] == 0
    assert (media / key).exists()

    with django_capture_on_commit_callbacks(execute=True):
        outcome = sweep(now=decided.decided_at + timedelta(days=31))
    assert (outcome["deleted"], outcome["holds_dropped"]) == (1, 1)
    assert not Attachment.objects.filter(pk=photo).exists()
    assert not (media / key).exists()
    assert not AttachmentHold.objects.exists()


def test_a_review_holds_only_its_own_files(photo_review, device_for, media, django_capture_on_commit_callbacks):
    stray = upload(device_for("bob"), png(color="yellow"))
    long_ago(stray)
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep()["deleted"] == 1
    assert not Attachment.objects.filter(pk=stray).exists()
    assert len(stored_files(media)) == 1  # the held photo


def test_a_device_cannot_terminate_a_file_a_pending_review_needs(photo_review, device_for) -> None:
    _, _, photo = photo_review
    response = device_for("bob").delete(f"/api/v1/uploads/{photo}", HTTP_TUS_RESUMABLE="1.0.0")
    assert response.status_code == 409, response.content
    assert Attachment.objects.filter(pk=photo).exists()


def test_a_review_that_names_no_file_holds_nothing(device_for, media) -> None:
    alice, bob = device_for("alice"), device_for("bob")
    record = create(alice, "inspection", INSPECTION)
    assert update(alice, record, 1, {"odometer_km": 1200})["version"] == 2
    assert update(bob, record, 1, {"passed": False})["status"] == "pending_review"
    assert not AttachmentHold.objects.exists()
