"""Records reference attachments by id (invariant 5): only complete, unrejected files uploaded by
a member of the record's team; the record stores the server's metadata, not the client's claim."""

from __future__ import annotations

import uuid

import pytest

from attachments.models import Attachment, AttachmentLink
from attachments.services import create_upload, request_reverification
from audit.models import AuditEvent
from records.models import Record
from tests.attachments_support import media, png, put, sha256

__all__ = ["media"]


def incident(record: str, photos: list[dict], action: str | None = None) -> dict:
    return {
        "id": action or str(uuid.uuid4()),
        "op": "create",
        "type": "incident",
        "record": record,
        "data": {
            "title": "Forklift scraped the rack",
            "severity": "low",
            "occurred_at": "2026-11-25T08:00:00Z",
            "description": "No one hurt.",
            "photos": photos,
        },
        "captured_at": "2026-11-25T08:05:00Z",
    }


def upload(client, data: bytes | None = None, **kwargs) -> str:
    attachment_id = str(uuid.uuid4())
    response = put(client, data or png(), attachment_id=attachment_id, **kwargs)
    assert response.status_code == 201, response.content
    return attachment_id


@pytest.fixture
def alice(device_for, media):
    return device_for("alice")


def only_result(response) -> dict:
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    return result


def test_the_record_stores_the_servers_metadata_not_the_clients_claim(alice) -> None:
    data = png()
    photo = upload(alice, data, filename="../../bumper.png")
    record = str(uuid.uuid4())
    claim = {"id": photo, "filename": "evil.exe", "size": 1, "sha256": "0" * 64, "url": "http://evil.example/"}
    result = only_result(alice.push([incident(record, [claim])]))
    assert result["status"] == "applied", result
    expected = {
        "id": photo,
        "filename": "bumper.png",
        "content_type": "image/png",
        "size": len(data),
        "sha256": sha256(data),
        "state": "uploaded",
        "url": f"/api/v1/attachments/{photo}/content",
    }
    assert result["data"]["photos"] == [expected]
    assert Record.objects.get(pk=record).data["photos"] == [expected]
    assert [c["data"]["photos"] for c in alice.pull().json()["changes"]] == [[expected]]
    assert AttachmentLink.objects.filter(attachment_id=photo, record_id=record).count() == 1


def test_an_unknown_attachment_is_refused(alice) -> None:
    record = str(uuid.uuid4())
    result = only_result(alice.push([incident(record, [{"id": str(uuid.uuid4())}])]))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "attachment_not_found"
    assert list(result["error"]["fields"]) == ["data.photos.0"]
    assert not Record.objects.filter(pk=record).exists()


def test_an_incomplete_upload_is_refused(alice, user) -> None:
    attachment, _ = create_upload(
        attachment_id=uuid.uuid4(),
        owner=user("alice"),
        device_id=alice.device_id,
        length=1000,
        filename="half.png",
        content_type="image/png",
        sha256="",
    )
    result = only_result(alice.push([incident(str(uuid.uuid4()), [{"id": str(attachment.pk)}])]))
    assert result["error"]["code"] == "attachment_incomplete"


def test_a_rejected_attachment_is_refused(alice, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        fake = upload(alice, b"<html><script>alert(1)</script></html>", filename="photo.png")
    assert Attachment.objects.get(pk=fake).state == "rejected"
    result = only_result(alice.push([incident(str(uuid.uuid4()), [{"id": fake}])]))
    assert result["error"]["code"] == "attachment_rejected"


def test_a_file_uploaded_by_another_team_is_refused(alice, device_for) -> None:
    carols = upload(device_for("carol"))
    result = only_result(alice.push([incident(str(uuid.uuid4()), [{"id": carols}])]))
    assert result["error"]["code"] == "attachment_forbidden"
    assert not AttachmentLink.objects.exists()


def test_a_teammates_upload_is_accepted(alice, device_for) -> None:
    bobs = upload(device_for("bob"))
    result = only_result(alice.push([incident(str(uuid.uuid4()), [{"id": bobs}])]))
    assert result["status"] == "applied"


def test_one_bad_reference_rejects_the_whole_action_and_names_each_path(alice) -> None:
    good = upload(alice)
    record = str(uuid.uuid4())
    result = only_result(alice.push([incident(record, [{"id": good}, {"id": str(uuid.uuid4())}])]))
    assert result["error"]["code"] == "attachment_not_found"
    assert list(result["error"]["fields"]) == ["data.photos.1"]
    assert not AttachmentLink.objects.exists()


def test_an_update_keeps_the_stored_metadata_of_references_it_already_had(alice, django_capture_on_commit_callbacks):
    photo = upload(alice)
    record = str(uuid.uuid4())
    created = only_result(alice.push([incident(record, [{"id": photo}])]))
    # Verification rejects the file after the record took it up: the record's trail says so.
    Attachment.objects.filter(pk=photo).update(declared_type="application/pdf")
    with django_capture_on_commit_callbacks(execute=True):
        request_reverification(attachment_id=uuid.UUID(photo), by=Attachment.objects.get(pk=photo).owner)
    assert Attachment.objects.get(pk=photo).state == "rejected"
    flagged = AuditEvent.objects.get(verb="record.attachment_rejected")
    assert (flagged.object_type, flagged.object_id) == ("record", record)
    # Editing another field does not fail on the old reference; its stored metadata stays.
    update = {
        "id": str(uuid.uuid4()),
        "op": "update",
        "type": "incident",
        "record": record,
        "base_version": created["version"],
        "data": {"severity": "high", "photos": [{"id": photo}]},
        "captured_at": "2026-11-25T09:00:00Z",
    }
    result = only_result(alice.push([update]))
    assert result["status"] == "applied", result
    assert result["data"]["photos"] == created["data"]["photos"]
