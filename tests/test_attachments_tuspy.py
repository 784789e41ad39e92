"""The real tus client (tuspy, over requests) against a live server: a full upload, a resume
after an interruption between chunks and in the middle of one, and a 200 MB upload whose body
never sits in the server's memory."""

from __future__ import annotations

import io
import socket
import time
import tracemalloc
import uuid
from urllib.parse import urlparse

import pytest
import requests
from PIL import Image
from tusclient.client import TusClient

from attachments.models import Attachment
from tests.attachments_support import media, sha256

__all__ = ["media"]

pytestmark = pytest.mark.django_db(transaction=True)


def noisy_jpeg(size: int = 900) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((size, size), 80).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.fixture
def tus(live_server, device_for, media):
    alice = device_for("alice")
    client = TusClient(f"{live_server.url}/api/v1/uploads/", headers={"Authorization": f"Bearer {alice.token}"})
    client.token = alice.token  # type: ignore[attr-defined]
    return client


def wait_for_state(attachment_id: str, states: set[str], seconds: float = 10) -> Attachment:
    deadline = time.monotonic() + seconds
    while True:
        attachment = Attachment.objects.get(pk=attachment_id)
        if attachment.state in states or time.monotonic() > deadline:
            return attachment
        time.sleep(0.05)


def meta(attachment_id: str, data: bytes, content_type: str = "image/jpeg") -> dict[str, str]:
    return {"id": attachment_id, "filename": "site photo.jpg", "content_type": content_type, "sha256": sha256(data)}


def test_tuspy_uploads_a_photo_in_checksummed_chunks(tus, media) -> None:
    data = noisy_jpeg()
    assert len(data) > 3 * 256 * 1024
    attachment_id = str(uuid.uuid4())
    uploader = tus.uploader(
        file_stream=io.BytesIO(data), chunk_size=256 * 1024, metadata=meta(attachment_id, data), upload_checksum=True
    )
    uploader.upload()
    assert uploader.offset == len(data)
    attachment = wait_for_state(attachment_id, {"verified", "rejected"})
    assert attachment.state == "verified", attachment.reject_detail
    assert (media / attachment.storage_key).read_bytes() == data
    assert attachment.filename == "site photo.jpg"


def test_tuspy_resumes_an_upload_interrupted_between_chunks(tus, media) -> None:
    data = noisy_jpeg()
    attachment_id = str(uuid.uuid4())
    first = tus.uploader(file_stream=io.BytesIO(data), chunk_size=128 * 1024, metadata=meta(attachment_id, data))
    first.upload(stop_at=3 * 128 * 1024)  # the phone lost signal here
    assert Attachment.objects.get(pk=attachment_id).received == 3 * 128 * 1024
    # A new client process, knowing only the upload URL, asks the server for the offset.
    resumed = tus.uploader(file_stream=io.BytesIO(data), chunk_size=128 * 1024, url=first.url)
    assert resumed.offset == 3 * 128 * 1024
    resumed.upload()
    attachment = wait_for_state(attachment_id, {"verified", "rejected"})
    assert attachment.state == "verified"
    assert (media / attachment.storage_key).read_bytes() == data


def test_tuspy_resumes_after_the_connection_dies_in_the_middle_of_a_chunk(tus, media) -> None:
    data = noisy_jpeg()
    attachment_id = str(uuid.uuid4())
    creator = tus.uploader(file_stream=io.BytesIO(data), chunk_size=len(data), metadata=meta(attachment_id, data))
    url = creator.create_url()
    # Send the headers of a PATCH for everything, then half of the body, then hang up.
    half = len(data) // 2
    parts = urlparse(url)
    with socket.create_connection((parts.hostname, parts.port)) as conn:
        head = (
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {tus.token}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        conn.sendall(head.encode() + data[:half])
    # The server keeps what arrived (tus core), once it notices the client is gone.
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {tus.token}"}
    deadline = time.monotonic() + 10
    while int(requests.head(url, headers=headers, timeout=5).headers["Upload-Offset"]) != half:
        assert time.monotonic() < deadline, "the server did not keep the partial chunk"
        time.sleep(0.05)
    resumed = tus.uploader(file_stream=io.BytesIO(data), chunk_size=256 * 1024, url=url)
    assert resumed.offset == half
    resumed.upload()
    attachment = wait_for_state(attachment_id, {"verified", "rejected"})
    assert attachment.state == "verified"
    assert (media / attachment.storage_key).read_bytes() == data


def test_a_200_mb_upload_adds_less_than_50_mb_to_the_servers_memory(tus, media, tmp_path, settings) -> None:
    settings.ATTACHMENT_MAX_BYTES = 256 * 1024 * 1024
    size = 200 * 1000 * 1000
    big = tmp_path / "scan.pdf"
    with big.open("wb") as fh:
        fh.write(b"%PDF-1.4\n%scan\n")
        fh.truncate(size)  # sparse: the rest reads as zeros without using the disk
    data_sha = _sha256_file(big)
    attachment_id = str(uuid.uuid4())
    uploader = tus.uploader(
        file_path=str(big),
        chunk_size=16 * 1024 * 1024,
        metadata={"id": attachment_id, "filename": "scan.pdf", "content_type": "application/pdf", "sha256": data_sha},
    )
    tracemalloc.start()
    try:
        uploader.upload()
        attachment = wait_for_state(attachment_id, {"verified", "rejected"}, seconds=120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 200 MB of real blocks in the media dir: do not leave them in pytest's kept temp dirs.
    (media / attachment.storage_key).unlink()
    big.unlink()
    assert attachment.state == "verified", attachment.reject_detail
    assert attachment.size == size
    # The peak covers the client too (tuspy holds one 16 MB chunk, requests may copy it once).
    print(f"peak Python allocation during the upload: {peak / 1e6:.1f} MB")
    assert peak < 50 * 1024 * 1024, f"peak Python allocation {peak / 1e6:.0f} MB"


def _sha256_file(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
