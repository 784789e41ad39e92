"""tus-js-client (the JavaScript client phone apps embed), run in Node against a live server: a
full upload in chunks, and a resume of an aborted upload from its URL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from attachments.models import Attachment
from tests.attachments_support import media, sha256
from tests.test_attachments_tuspy import noisy_jpeg

__all__ = ["media"]

JS_DIR = Path(__file__).resolve().parent / "js"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    installed = (JS_DIR / "node_modules" / "tus-js-client").is_dir()
    if executable is None or not installed:
        if os.environ.get("CI"):
            pytest.fail("node and tests/js/node_modules are needed (make venv runs npm ci in tests/js)")
        pytest.skip("needs node and `npm ci --prefix tests/js`")
    return executable


def run(node: str, *args: str) -> dict:
    done = subprocess.run([node, str(JS_DIR / "upload.js"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for_state(attachment_id: str) -> Attachment:
    deadline = time.monotonic() + 10
    while (attachment := Attachment.objects.get(pk=attachment_id)).state == "uploaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    return attachment


def test_tus_js_client_uploads_and_resumes(node, live_server, device_for, media, tmp_path) -> None:
    token = device_for("alice").token
    data = noisy_jpeg()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    endpoint = f"{live_server.url}/api/v1/uploads/"

    full_id = str(uuid.uuid4())
    assert run(node, endpoint, token, str(path), full_id, sha256(data), str(200 * 1024))["done"]
    attachment = wait_for_state(full_id)
    assert attachment.state == "verified", attachment.reject_detail
    assert (attachment.filename, attachment.declared_type) == ("from-js.jpg", "image/jpeg")
    assert (media / attachment.storage_key).read_bytes() == data

    resumed_id = str(uuid.uuid4())
    aborted = run(node, endpoint, token, str(path), resumed_id, sha256(data), str(128 * 1024), str(256 * 1024))
    assert Attachment.objects.get(pk=resumed_id).received == aborted["aborted"] == 256 * 1024
    finished = run(node, endpoint, token, str(path), resumed_id, sha256(data), str(128 * 1024), "0", aborted["url"])
    assert finished["done"] and finished["url"] == aborted["url"]
    attachment = wait_for_state(resumed_id)
    assert attachment.state == "verified"
    assert (media / attachment.storage_key).read_bytes() == data
