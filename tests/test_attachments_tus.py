"""The tus 1.0.0 server at /api/v1/uploads/, case by case over raw HTTP (the Django test client)."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from attachments.models import Attachment
from tests.attachments_support import media, png, sha256, stored_files

__all__ = ["media"]

TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(client, length: int, *, body: bytes = b"", **meta: str):
    headers = {**TUS, "HTTP_UPLOAD_LENGTH": str(length), "HTTP_UPLOAD_METADATA": metadata(**meta)}
    if body:
        return client.generic("POST", "/api/v1/uploads/", body, content_type=OCTETS, **headers)
    return client.post("/api/v1/uploads/", **headers)


def patch(client, url: str, chunk: bytes, offset: int, *, content_type: str = OCTETS, **headers):
    return client.generic(
        "PATCH", url, chunk, content_type=content_type, HTTP_UPLOAD_OFFSET=str(offset), **{**TUS, **headers}
    )


def checksum(algorithm: str, chunk: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, chunk).digest()).decode()}"


@pytest.fixture
def alice(device_for, media):
    return device_for("alice")


@pytest.fixture
def upload(alice):
    """A created upload of a PNG: (url, data, attachment id)."""
    data = png(300, 200)
    attachment_id = str(uuid.uuid4())
    response = create(
        alice, len(data), id=attachment_id, filename="a.png", content_type="image/png", sha256=sha256(data)
    )
    assert response.status_code == 201, response.content
    return response["Location"], data, attachment_id


def test_options_advertises_the_server_without_auth_or_tus_resumable(client) -> None:
    response = client.options("/api/v1/uploads/")
    assert response.status_code == 204
    assert response["Tus-Version"] == "1.0.0"
    assert set(response["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "checksum",
        "termination",
        "expiration",
    }
    assert int(response["Tus-Max-Size"]) > 200_000_000
    assert response["Tus-Checksum-Algorithm"] == "sha1,sha256"


def test_a_request_without_tus_resumable_gets_412(alice) -> None:
    response = alice.post("/api/v1/uploads/", HTTP_UPLOAD_LENGTH="10")
    assert response.status_code == 412
    assert response["Tus-Version"] == "1.0.0"


def test_creation_then_chunks_then_head(alice, upload, media, django_capture_on_commit_callbacks) -> None:
    url, data, attachment_id = upload
    assert url.endswith(f"/api/v1/uploads/{attachment_id}")
    head = alice.head(url, **TUS)
    assert (head.status_code, head["Upload-Offset"], head["Upload-Length"]) == (200, "0", str(len(data)))
    assert head["Cache-Control"] == "no-store"
    assert head["Tus-Resumable"] == "1.0.0"
    assert "Upload-Expires" in head
    first = patch(alice, url, data[:100], 0)
    assert (first.status_code, first["Upload-Offset"]) == (204, "100")
    with django_capture_on_commit_callbacks(execute=True):
        last = patch(alice, url, data[100:], 100)
    assert (last.status_code, last["Upload-Offset"]) == (204, str(len(data)))
    attachment = Attachment.objects.get(pk=attachment_id)
    assert attachment.state == "verified"
    assert (media / attachment.storage_key).read_bytes() == data
    assert not list((media.parent / "staging").glob("*.part"))


def test_creation_with_upload_takes_the_first_chunk_in_the_post(alice) -> None:
    data = png()
    response = create(alice, len(data), body=data[:50], id=str(uuid.uuid4()), content_type="image/png")
    assert response.status_code == 201
    assert response["Upload-Offset"] == "50"


def test_an_empty_upload_metadata_is_accepted(alice) -> None:
    response = alice.post("/api/v1/uploads/", HTTP_UPLOAD_LENGTH="10", HTTP_UPLOAD_METADATA="", **TUS)
    assert response.status_code == 201
    assert Attachment.objects.get().filename == "attachment"


def test_a_wrong_offset_gets_409_and_changes_nothing(alice, upload) -> None:
    url, data, attachment_id = upload
    response = patch(alice, url, data[:10], 5)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "offset_mismatch"
    assert Attachment.objects.get(pk=attachment_id).received == 0


def test_a_wrong_content_type_gets_415(alice, upload) -> None:
    url, data, _ = upload
    assert patch(alice, url, data[:10], 0, content_type="application/octet-stream").status_code == 415


def test_a_chunk_past_the_length_gets_413(alice, upload) -> None:
    url, data, _ = upload
    assert patch(alice, url, data + b"extra", 0).status_code == 413


def test_creation_over_the_max_size_gets_413(alice, settings) -> None:
    settings.ATTACHMENT_MAX_BYTES = 1000
    assert create(alice, 1001, id=str(uuid.uuid4())).status_code == 413


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_a_chunk_with_a_matching_checksum_is_kept(alice, upload, algorithm) -> None:
    url, data, _ = upload
    response = patch(alice, url, data[:100], 0, HTTP_UPLOAD_CHECKSUM=checksum(algorithm, data[:100]))
    assert (response.status_code, response["Upload-Offset"]) == (204, "100")


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_a_checksum_mismatch_gets_460_and_the_chunk_is_discarded(alice, upload, algorithm, media) -> None:
    url, data, attachment_id = upload
    assert patch(alice, url, data[:100], 0).status_code == 204
    response = patch(alice, url, data[100:200], 100, HTTP_UPLOAD_CHECKSUM=checksum(algorithm, b"other bytes"))
    assert response.status_code == 460
    assert response.json()["error"]["code"] == "checksum_mismatch"
    assert Attachment.objects.get(pk=attachment_id).received == 100
    assert alice.head(url, **TUS)["Upload-Offset"] == "100"
    staged = media.parent / "staging" / f"{attachment_id}.part"
    assert staged.read_bytes() == data[:100]
    # The client sends the chunk again, correctly, and carries on.
    assert patch(alice, url, data[100:], 100, HTTP_UPLOAD_CHECKSUM=checksum(algorithm, data[100:])).status_code == 204


def test_an_unsupported_checksum_algorithm_gets_400(alice, upload) -> None:
    url, data, _ = upload
    response = patch(alice, url, data[:10], 0, HTTP_UPLOAD_CHECKSUM="md5 " + base64.b64encode(b"x" * 16).decode())
    assert response.status_code == 400


def test_a_complete_file_that_does_not_match_its_declared_sha256_is_rejected(alice, media) -> None:
    data = png()
    attachment_id = str(uuid.uuid4())
    url = create(alice, len(data), id=attachment_id, content_type="image/png", sha256=sha256(b"other"))["Location"]
    response = patch(alice, url, data, 0)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "checksum_mismatch"
    attachment = Attachment.objects.get(pk=attachment_id)
    assert (attachment.state, attachment.reject_reason) == ("rejected", "checksum_mismatch")
    assert stored_files(media) == []


def test_termination_deletes_the_upload_and_its_bytes(alice, upload, media, django_capture_on_commit_callbacks):
    url, data, attachment_id = upload
    patch(alice, url, data[:100], 0)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice.delete(url, **TUS)
    assert response.status_code == 204
    assert not Attachment.objects.filter(pk=attachment_id).exists()
    assert not list((media.parent / "staging").glob("*.part"))
    assert alice.head(url, **TUS).status_code == 404


def test_an_expired_upload_gets_410(alice, upload) -> None:
    from datetime import timedelta

    from django.utils import timezone

    url, data, attachment_id = upload
    Attachment.objects.filter(pk=attachment_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert patch(alice, url, data, 0).status_code == 410
    assert alice.head(url, **TUS).status_code == 410


def test_another_users_upload_does_not_exist_for_them(device_for, upload) -> None:
    url, data, _ = upload
    carol = device_for("carol")
    assert carol.head(url, **TUS).status_code == 404
    assert patch(carol, url, data, 0).status_code == 404
    assert carol.delete(url, **TUS).status_code == 404


def test_creating_the_same_id_again_returns_the_same_upload(alice, upload) -> None:
    url, data, attachment_id = upload
    patch(alice, url, data[:10], 0)
    again = create(alice, len(data), id=attachment_id, filename="a.png", content_type="image/png", sha256=sha256(data))
    assert (again.status_code, again["Location"], again["Upload-Offset"]) == (201, url, "10")
    other = create(alice, len(data), id=attachment_id, sha256=sha256(b"x"))
    assert other.status_code == 409


def test_a_patch_while_another_holds_the_upload_gets_423(alice, upload) -> None:
    from datetime import timedelta

    from django.utils import timezone

    url, data, attachment_id = upload
    Attachment.objects.filter(pk=attachment_id).update(
        patch_token=uuid.uuid4(), patch_until=timezone.now() + timedelta(seconds=30)
    )
    assert patch(alice, url, data, 0).status_code == 423


def test_a_garbled_content_length_on_creation_is_a_4xx_not_a_500(alice) -> None:
    response = alice.generic(
        "POST",
        "/api/v1/uploads/",
        b"",
        content_type=OCTETS,
        CONTENT_LENGTH="ten",
        HTTP_UPLOAD_LENGTH="10",
        HTTP_UPLOAD_METADATA="",
        **TUS,
    )
    assert response.status_code == 411
    assert response["Tus-Resumable"] == "1.0.0"


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_UPLOAD_LENGTH": "-1"},
        {"HTTP_UPLOAD_LENGTH": "abc"},
        {},
        {"HTTP_UPLOAD_LENGTH": "10", "HTTP_UPLOAD_METADATA": "id not-base64!"},
        {"HTTP_UPLOAD_LENGTH": "10", "HTTP_UPLOAD_METADATA": f"id {base64.b64encode(b'not-a-uuid').decode()}"},
        {"HTTP_UPLOAD_DEFER_LENGTH": "1"},
    ],
    ids=["negative", "text", "missing", "bad-base64", "bad-uuid", "deferred"],
)
def test_bad_creation_headers_get_400(alice, headers) -> None:
    response = alice.post("/api/v1/uploads/", **{**TUS, **headers})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"]
    assert not Attachment.objects.exists()


def test_a_patch_without_upload_offset_gets_400(alice, upload) -> None:
    url, data, _ = upload
    response = alice.generic("PATCH", url, data, content_type=OCTETS, **TUS)
    assert response.status_code == 400
