"""Upload state lives in the database, not in a process: the chunks of one upload may reach
different app servers, and two requests writing the same upload never interleave."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from attachments.models import Attachment
from tests.attachments_support import media, sha256
from tests.celery_worker import database_url_for_test_db
from tests.test_attachments_s3 import _free_port
from tests.test_attachments_tuspy import noisy_jpeg, wait_for_state

__all__ = ["media"]

BASE_DIR = Path(__file__).resolve().parent.parent
OCTETS = "application/offset+octet-stream"


def tus_headers(token: str, **extra: str) -> dict[str, str]:
    return {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}", **extra}


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@pytest.mark.django_db(transaction=True)
def test_a_second_patch_waits_out_the_first_and_never_interleaves(live_server, device_for, media) -> None:
    token = device_for("alice").token
    data = noisy_jpeg()
    attachment_id = str(uuid.uuid4())
    created = requests.post(
        f"{live_server.url}/api/v1/uploads/",
        headers=tus_headers(token, **{"Upload-Length": str(len(data)), "Upload-Metadata": metadata(id=attachment_id)}),
        timeout=10,
    )
    url = created.headers["Location"]
    parts = urlparse(url)
    half = len(data) // 2
    # A slow phone: the headers of a PATCH for the first half, then only part of its body so far.
    slow = socket.create_connection((parts.hostname, parts.port))
    head = (
        f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: {OCTETS}\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {half}\r\nConnection: close\r\n\r\n"
    )
    slow.sendall(head.encode() + data[:1000])
    deadline = time.monotonic() + 10
    while Attachment.objects.get(pk=attachment_id).patch_token is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # Another request for the same upload (the client retried on another connection) is turned away.
    rival = requests.patch(
        url, data=data[:half], headers=tus_headers(token, **{"Content-Type": OCTETS, "Upload-Offset": "0"}), timeout=10
    )
    assert rival.status_code == 423
    slow.sendall(data[1000:half])
    reply = slow.recv(4096).decode()
    slow.close()
    assert reply.startswith("HTTP/1.1 204"), reply
    assert Attachment.objects.get(pk=attachment_id).received == half
    # The rival's retry now finds the offset moved on.
    late = requests.patch(
        url, data=data[:half], headers=tus_headers(token, **{"Content-Type": OCTETS, "Upload-Offset": "0"}), timeout=10
    )
    assert late.status_code == 409
    done = requests.patch(
        url,
        data=data[half:],
        headers=tus_headers(token, **{"Content-Type": OCTETS, "Upload-Offset": str(half)}),
        timeout=10,
    )
    assert done.status_code == 204
    attachment = wait_for_state(attachment_id, {"verified", "rejected"})
    assert (media / attachment.storage_key).read_bytes() == data


@pytest.fixture
def two_app_servers(media: Path, tmp_path: Path) -> Iterator[list[str]]:
    """Two gunicorn servers on the test database, sharing the storage and the staging area."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_test_db(),
        "DB_CONN_MAX_AGE": "0",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "MEDIA_ROOT": str(media),
        "ATTACHMENT_STAGING_DIR": str(tmp_path / "staging"),
        "CELERY_TASK_ALWAYS_EAGER": "1",
    }
    servers, urls = [], []
    for index in range(2):
        port = _free_port()
        log = (tmp_path / f"gunicorn-{index}.log").open("wb")
        servers.append(
            subprocess.Popen(
                [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi", "--bind", f"127.0.0.1:{port}",
                 "--workers", "1", "--timeout", "60"],
                cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
        urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{urls[-1]}/healthz", timeout=5)
                break
            except requests.RequestException:  # refused, or accepted but not answering yet
                assert servers[-1].poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
    try:
        yield urls
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=15)


@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True)
def test_the_chunks_of_one_upload_may_reach_different_app_servers(two_app_servers, device_for, media) -> None:
    a, b = two_app_servers
    token = device_for("alice").token
    data = noisy_jpeg()
    attachment_id = str(uuid.uuid4())
    created = requests.post(
        f"{a}/api/v1/uploads/",
        headers=tus_headers(
            token,
            **{
                "Upload-Length": str(len(data)),
                "Upload-Metadata": metadata(id=attachment_id, content_type="image/jpeg", sha256=sha256(data)),
            },
        ),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    path = urlparse(created.headers["Location"]).path
    chunk = 100 * 1024
    offset = 0
    for turn, start in enumerate(range(0, len(data), chunk)):
        server = (a, b)[turn % 2]
        head = requests.head(f"{server}{path}", headers=tus_headers(token), timeout=10)
        assert int(head.headers["Upload-Offset"]) == offset  # each server sees what the other wrote
        response = requests.patch(
            f"{server}{path}",
            data=data[start : start + chunk],
            headers=tus_headers(token, **{"Content-Type": OCTETS, "Upload-Offset": str(offset)}),
            timeout=30,
        )
        assert response.status_code == 204, response.text
        offset = int(response.headers["Upload-Offset"])
    assert offset == len(data)
    attachment = wait_for_state(attachment_id, {"verified", "rejected"})
    assert attachment.state == "verified", attachment.reject_detail
    assert (media / attachment.storage_key).read_bytes() == data
