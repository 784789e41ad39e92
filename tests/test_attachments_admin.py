"""The attachments list in the admin: state, type, size, owner, records; a thumbnail preview; a
re-verify action that goes through the service (and so the audit journal)."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User

from attachments.models import Attachment
from audit.models import AuditEvent
from tests.attachments_support import media, png, put
from tests.test_attachments_records import incident

__all__ = ["media"]

LIST = "/admin/attachments/attachment/"


@pytest.fixture
def photo(device_for, media, django_capture_on_commit_callbacks) -> Attachment:
    alice = device_for("alice")
    attachment_id = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        assert put(alice, png(640, 480), attachment_id=attachment_id, filename="dent.png").status_code == 201
    assert (
        alice.push([incident(str(uuid.uuid4()), [{"id": attachment_id}])]).json()["results"][0]["status"] == "applied"
    )
    return Attachment.objects.get(pk=attachment_id)


def login(client, username: str):
    client.force_login(User.objects.get(username=username))
    return client


def test_a_manager_sees_the_list_with_state_type_size_owner_and_records(client, photo) -> None:
    response = login(client, "mark").get(LIST)
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("dent.png", "verified", "image/png", "alice", '<td class="field-record_count">1</td>'):
        assert text in page, text


def test_the_detail_page_shows_a_thumbnail_and_links_the_record(client, photo) -> None:
    page = login(client, "olivia").get(f"{LIST}{photo.pk}/change/").content.decode()
    thumbnail = f"{LIST}{photo.pk}/thumbnail/"
    assert thumbnail in page
    assert "/admin/records/record/" in page
    response = client.get(thumbnail)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content).startswith(b"\xff\xd8")


def test_a_field_worker_cannot_see_the_admin_list(client, photo) -> None:
    User.objects.filter(username="alice").update(is_staff=True)
    assert login(client, "alice").get(LIST).status_code == 403


def test_re_verify_goes_through_the_service_and_the_journal(client, photo, django_capture_on_commit_callbacks) -> None:
    login(client, "olivia")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(LIST, {"action": "reverify", "_selected_action": [str(photo.pk)]}, follow=True)
    assert response.status_code == 200
    assert "1 file(s) sent to verification" in response.content.decode()
    requested = AuditEvent.objects.get(verb="attachment.reverify_requested")
    assert (requested.actor_username, requested.source) == ("olivia", "admin")
    assert AuditEvent.objects.filter(verb="attachment.verified", object_id=str(photo.pk)).count() == 2
    assert Attachment.objects.get(pk=photo.pk).state == "verified"


def test_a_manager_may_not_re_verify(client, photo) -> None:
    login(client, "mark")
    client.post(LIST, {"action": "reverify", "_selected_action": [str(photo.pk)]})
    assert not AuditEvent.objects.filter(verb="attachment.reverify_requested").exists()


def test_the_record_page_previews_its_attachments_and_flags_a_rejected_one(
    client, photo, django_capture_on_commit_callbacks
) -> None:
    from attachments.models import AttachmentLink

    record_id = AttachmentLink.objects.get(attachment=photo).record_id
    login(client, "olivia")
    page = client.get(f"/admin/records/record/{record_id}/change/").content.decode()
    assert f"{LIST}{photo.pk}/thumbnail/" in page and "dent.png" in page
    assert "REJECTED" not in page
    # Verification changes its mind after the record took the file up: the record page says so.
    Attachment.objects.filter(pk=photo.pk).update(declared_type="application/pdf")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(LIST, {"action": "reverify", "_selected_action": [str(photo.pk)]})
    page = client.get(f"/admin/records/record/{record_id}/change/").content.decode()
    assert "REJECTED: type_mismatch" in page


def test_the_review_page_previews_the_attachments_the_device_proposes(
    client, device_for, media, django_capture_on_commit_callbacks
) -> None:
    from approvals.models import Review
    from tests.reviewing import INSPECTION, create, update

    alice, bob = device_for("alice"), device_for("bob")
    record = create(alice, "inspection", INSPECTION)
    update(alice, record, 1, {"odometer_km": 1200})
    signature = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        assert put(bob, png(200, 80), attachment_id=signature, filename="signature.png").status_code == 201
    result = update(bob, record, 1, {"passed": False, "signature": {"id": signature}})
    assert result["status"] == "pending_review", result
    review = Review.objects.get(pk=result["review"])
    page = login(client, "olivia").get(f"/admin/approvals/review/{review.pk}/change/").content.decode()
    assert 'id="review-attachments"' in page
    assert "signature.png" in page and f"{LIST}{signature}/thumbnail/" in page
