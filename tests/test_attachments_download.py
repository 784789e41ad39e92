"""Downloads: only for the teams of the records that reference the file (or its uploader before
any record does, or staff with the view permission); the sniffed type; a safe filename."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User

from tests.attachments_support import media, png, put
from tests.test_attachments_records import incident

__all__ = ["media"]


@pytest.fixture
def alice(device_for, media):
    return device_for("alice")


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


def verified_upload(client, capture, data: bytes, **kwargs) -> str:
    attachment_id = str(uuid.uuid4())
    with capture(execute=True):
        assert put(client, data, attachment_id=attachment_id, **kwargs).status_code == 201
    return attachment_id


def content(client, attachment_id: str):
    return client.get(f"/api/v1/attachments/{attachment_id}/content")


def test_the_uploader_downloads_with_the_sniffed_type_and_a_safe_name(alice, on_commit):
    data = png()
    photo = verified_upload(alice, on_commit, data, filename="../..\\été\x00 <b>.png", content_type="image/png")
    response = content(alice, photo)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == data
    assert response["Content-Type"] == "image/png"
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert ".." not in disposition and "/" not in disposition.replace("filename*=utf-8''", "")
    assert "%C3%A9t%C3%A9" in disposition  # the unicode name survives, percent-encoded
    assert response["X-Content-Type-Options"] == "nosniff"


def test_before_a_record_takes_it_up_only_the_uploader_may_download(alice, device_for, on_commit):
    photo = verified_upload(alice, on_commit, png())
    assert content(device_for("bob"), photo).status_code == 404
    assert device_for("bob").get(f"/api/v1/attachments/{photo}").status_code == 404


def test_once_linked_the_records_team_downloads_and_outsiders_do_not(alice, device_for, on_commit):
    photo = verified_upload(alice, on_commit, png())
    result = alice.push([incident(str(uuid.uuid4()), [{"id": photo}])]).json()["results"][0]
    assert result["status"] == "applied"
    assert content(device_for("bob"), photo).status_code == 200
    carol = device_for("carol")
    assert content(carol, photo).status_code == 404
    assert carol.get(f"/api/v1/attachments/{photo}").status_code == 404


def test_an_officer_in_the_admin_session_may_download(alice, client, on_commit):
    photo = verified_upload(alice, on_commit, png())
    client.force_login(User.objects.get(username="admin"))
    assert content(client, photo).status_code == 200


def test_a_file_not_yet_verified_does_not_download(alice) -> None:
    attachment_id = str(uuid.uuid4())
    assert put(alice, png(), attachment_id=attachment_id).status_code == 201  # on_commit never ran
    response = content(alice, attachment_id)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "attachment_not_ready"


def test_a_rejected_file_never_downloads(alice, on_commit) -> None:
    fake = verified_upload(
        alice, on_commit, b"<?php system($_GET['c']); ?>", filename="x.jpg", content_type="image/jpeg"
    )
    assert content(alice, fake).status_code == 409
