"""The simple upload (PUT) and the metadata endpoint, through the real HTTP client."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from attachments import files, services
from attachments.models import Attachment
from attachments.services import AttachmentError, sweep, upload_simple
from audit.models import AuditEvent
from tests.attachments_support import media, png, put, sha256, stored_files

__all__ = ["media"]


@pytest.fixture
def alice(device_for, media):
    return device_for("alice")


def test_it_stores_a_file_and_returns_the_server_metadata(alice, media, django_capture_on_commit_callbacks) -> None:
    data = png()
    attachment_id = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        response = put(alice, data, attachment_id=attachment_id, filename="front bumper.png")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body == {
        "id": attachment_id,
        "filename": "front bumper.png",
        "content_type": "image/png",
        "size": len(data),
        "sha256": sha256(data),
        "state": "uploaded",
        "url": f"/api/v1/attachments/{attachment_id}/content",
    }
    attachment = Attachment.objects.get(pk=attachment_id)
    assert "front" not in attachment.storage_key and attachment.storage_key.startswith("attachments/files/")
    assert (media / attachment.storage_key).read_bytes() == data
    # Verification ran after the commit (eagerly here): the metadata now says so.
    assert alice.get(f"/api/v1/attachments/{attachment_id}").json() == {**body, "state": "verified"}
    verbs = list(AuditEvent.objects.filter(object_id=attachment_id).order_by("seq").values_list("verb", flat=True))
    assert verbs == ["attachment.uploaded", "attachment.verified"]


def test_the_same_id_and_sha256_returns_the_original_without_storing_again(alice, media) -> None:
    data = png()
    attachment_id = str(uuid.uuid4())
    first = put(alice, data, attachment_id=attachment_id)
    again = put(alice, data, attachment_id=attachment_id, filename="renamed.png")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(stored_files(media)) == 1


def test_the_same_id_with_other_content_is_a_conflict(alice, media) -> None:
    attachment_id = str(uuid.uuid4())
    assert put(alice, png(color="red"), attachment_id=attachment_id).status_code == 201
    response = put(alice, png(color="green"), attachment_id=attachment_id)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "attachment_conflict"


def test_another_user_reusing_an_id_gets_a_conflict_not_the_file(device_for, alice, media) -> None:
    data = png()
    attachment_id = str(uuid.uuid4())
    assert put(alice, data, attachment_id=attachment_id).status_code == 201
    carol = device_for("carol")
    response = put(carol, data, attachment_id=attachment_id)
    assert response.status_code == 409
    assert carol.get(f"/api/v1/attachments/{attachment_id}").status_code == 404


def test_bytes_that_do_not_match_x_sha256_are_rejected_and_nothing_is_stored(alice, media) -> None:
    attachment_id = str(uuid.uuid4())
    response = put(alice, png(), attachment_id=attachment_id, sha=sha256(b"something else"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "checksum_mismatch"
    assert not Attachment.objects.filter(pk=attachment_id).exists()
    assert stored_files(media) == []
    # The id stays usable: the retry with the right bytes goes through.
    assert put(alice, png(), attachment_id=attachment_id).status_code == 201


def test_it_needs_x_sha256_in_hex(alice, media) -> None:
    assert put(alice, png(), sha="").json()["error"]["code"] == "sha256_required"
    response = put(alice, png(), sha="not-a-hash")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_sha256"


def test_it_needs_a_content_length(alice, media) -> None:
    # What a chunked body without Content-Length looks like under WSGI (Django #35838).
    response = alice.generic(
        "PUT",
        f"/api/v1/attachments/{uuid.uuid4()}",
        b"",
        content_type="image/png",
        HTTP_X_SHA256=sha256(b""),
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    assert response.status_code == 411
    assert response.json()["error"]["code"] == "length_required"


def test_a_file_over_the_limit_is_refused_before_reading_it(alice, media, settings) -> None:
    settings.ATTACHMENT_SIMPLE_MAX_BYTES = 100
    response = put(alice, png())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert stored_files(media) == []


def test_a_body_shorter_than_its_content_length_stores_nothing(user, media) -> None:
    # The test client refuses to send a short body; the service sees what a dropped connection gives.
    data = png()
    with pytest.raises(AttachmentError) as error:
        upload_simple(
            attachment_id=uuid.uuid4(),
            owner=user("alice"),
            device_id=None,
            filename="x.png",
            content_type="image/png",
            sha256=sha256(data),
            length=len(data) + 10,
            body=io.BytesIO(data),
        )
    assert error.value.code == "incomplete_body"
    assert stored_files(media) == []
    assert not Attachment.objects.exists()


def test_it_needs_a_content_type(alice, media) -> None:
    response = put(alice, png(), content_type="application/octet-stream")
    assert response.status_code == 415


def test_it_needs_a_device_token(client, media) -> None:
    response = put(client, png())
    assert response.status_code == 401


def test_an_unknown_attachment_is_not_found(alice, media) -> None:
    response = alice.get(f"/api/v1/attachments/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "attachment_not_found"


# --- a crash between the storage write and the row ---------------------------------------------


class Crash(Exception):
    """The process dying right after the bytes reached storage (nothing below it runs)."""


@pytest.fixture
def crash_after_storing(monkeypatch):
    def die(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(services, "_finish_store", die)
    return monkeypatch


def test_a_crash_after_storing_leaves_a_row_that_names_the_stored_object(alice, media, crash_after_storing) -> None:
    data = png()
    attachment_id = str(uuid.uuid4())
    with pytest.raises(Crash):
        put(alice, data, attachment_id=attachment_id)
    row = Attachment.objects.get(pk=attachment_id)
    assert (row.state, row.uploaded_at) == ("uploading", None)
    assert stored_files(media) == [media / row.storage_key]
    assert (media / row.storage_key).read_bytes() == data
    assert not AuditEvent.objects.filter(object_id=attachment_id).exists()
    # Not a file anyone may use: a record is refused it like an unfinished upload.
    assert alice.get(f"/api/v1/attachments/{attachment_id}").json()["state"] == "uploading"


def test_the_sweeper_deletes_the_object_a_crashed_upload_stored(
    alice, media, crash_after_storing, django_capture_on_commit_callbacks
) -> None:
    attachment_id = str(uuid.uuid4())
    with pytest.raises(Crash):
        put(alice, png(), attachment_id=attachment_id)
    assert len(stored_files(media)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep()["expired"] == 0  # not expired yet: a retry may still take it over
    assert len(stored_files(media)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep(now=timezone.now() + timedelta(days=8))["expired"] == 1
    assert stored_files(media) == []
    assert not Attachment.objects.filter(pk=attachment_id).exists()


def test_a_retry_after_the_crash_takes_the_upload_over(
    alice, media, crash_after_storing, django_capture_on_commit_callbacks
) -> None:
    data = png()
    attachment_id = str(uuid.uuid4())
    with pytest.raises(Crash):
        put(alice, data, attachment_id=attachment_id)
    crashed_key = Attachment.objects.get(pk=attachment_id).storage_key
    crash_after_storing.undo()

    # While the dead request's lease lasts, a retry cannot tell it from one still storing.
    busy = put(alice, data, attachment_id=attachment_id)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "attachment_incomplete"

    Attachment.objects.filter(pk=attachment_id).update(patch_until=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        retry = put(alice, data, attachment_id=attachment_id)
    assert retry.status_code == 201, retry.content
    row = Attachment.objects.get(pk=attachment_id)
    assert row.state == "verified" and row.storage_key != crashed_key
    assert stored_files(media / "attachments" / "files") == [media / row.storage_key]  # the crashed copy is gone
    verbs = list(AuditEvent.objects.filter(object_id=attachment_id).order_by("seq").values_list("verb", flat=True))
    assert verbs == ["attachment.uploaded", "attachment.verified"]


def test_another_users_retry_cannot_take_a_crashed_upload_over(alice, device_for, media, crash_after_storing) -> None:
    data = png()
    attachment_id = str(uuid.uuid4())
    with pytest.raises(Crash):
        put(alice, data, attachment_id=attachment_id)
    crash_after_storing.undo()
    Attachment.objects.filter(pk=attachment_id).update(patch_until=timezone.now() - timedelta(seconds=1))
    response = put(device_for("bob"), data, attachment_id=attachment_id)
    assert response.status_code == 409 and response.json()["error"]["code"] == "attachment_conflict"
    assert Attachment.objects.get(pk=attachment_id).owner.username == "alice"


def test_a_storage_that_fails_mid_write_leaves_no_row_and_no_object(
    alice, media, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    save = files.save

    def half_written(key, path):
        save(key, path)  # the object exists, but the storage then reports failure
        raise OSError("connection reset")

    monkeypatch.setattr(files, "save", half_written)
    attachment_id = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(OSError):
        put(alice, png(), attachment_id=attachment_id)
    assert not Attachment.objects.filter(pk=attachment_id).exists()
    assert stored_files(media) == []
