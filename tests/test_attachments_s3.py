"""The S3 path end to end, against moto's server mode on 127.0.0.1: simple and tus uploads land
in the bucket (a 12 MiB file as a real multipart upload, 8 MiB parts), verification streams the
object back, and a download is a short-lived presigned URL with our filename and sniffed type."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from attachments.models import Attachment
from tests.attachments_support import png, put, sha256

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
CLIENT_CONFIG = Config(
    signature_version="s3v4", request_checksum_calculation="when_required", response_checksum_validation="when_required"
)


def _free_port() -> int:
    for port in range(8400, 8500):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 8400-8499")


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    # moto binds 0.0.0.0 unless told otherwise.
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "1"},
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=5)
                break
            except requests.RequestException:  # refused, or accepted but not answering yet
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start (see {log.name})")
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def bucket(moto_endpoint: str, settings, tmp_path) -> str:
    name = f"fieldsync-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, config=CLIENT_CONFIG, **CREDENTIALS)
    s3.create_bucket(Bucket=name)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": name,
                "endpoint_url": moto_endpoint,
                "region_name": "us-east-1",
                "access_key": "testing",
                "secret_key": "testing",
                "default_acl": None,
                "file_overwrite": False,
                "querystring_auth": True,
                "querystring_expire": 300,
                "client_config": CLIENT_CONFIG,
            },
        },
    }
    settings.ATTACHMENT_STAGING_DIR = tmp_path / "staging"
    return name


@pytest.fixture
def s3(moto_endpoint: str):
    return boto3.client("s3", endpoint_url=moto_endpoint, config=CLIENT_CONFIG, **CREDENTIALS)


def test_a_simple_upload_is_verified_from_s3_and_downloads_by_presigned_url(
    bucket, s3, device_for, django_capture_on_commit_callbacks
) -> None:
    alice = device_for("alice")
    data = png(400, 300)
    attachment_id = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        response = put(alice, data, attachment_id=attachment_id, filename="dent été.png")
    assert response.status_code == 201, response.content
    attachment = Attachment.objects.get(pk=attachment_id)
    assert attachment.state == "verified", attachment.reject_detail
    assert s3.get_object(Bucket=bucket, Key=attachment.storage_key)["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key=attachment.thumbnail_key)["ContentLength"] > 0

    download = alice.get(f"/api/v1/attachments/{attachment_id}/content")
    assert download.status_code == 302
    url = download["Location"]
    assert "X-Amz-Expires=60" in url and "X-Amz-Signature" in url
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["Content-Type"] == "image/png"
    assert fetched.headers["Content-Disposition"].startswith("attachment;")
    assert "%C3%A9t%C3%A9" in fetched.headers["Content-Disposition"]


def test_a_tus_upload_of_12_mib_is_stored_as_a_multipart_object(
    bucket, s3, device_for, django_capture_on_commit_callbacks
) -> None:
    alice = device_for("alice")
    # Random filler with no "/": random bytes can spell a PDF name such as /JS, which the
    # verification rightly rejects as active content (it did, now and then).
    data = b"%PDF-1.4\n" + os.urandom(12 * 1024 * 1024).replace(b"/", b"0") + b"\n%%EOF\n"
    attachment_id = str(uuid.uuid4())
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"id": attachment_id, "content_type": "application/pdf", "sha256": sha256(data)}.items()
    )
    tus = {"HTTP_TUS_RESUMABLE": "1.0.0"}
    created = alice.post("/api/v1/uploads/", HTTP_UPLOAD_LENGTH=str(len(data)), HTTP_UPLOAD_METADATA=meta, **tus)
    assert created.status_code == 201
    url = created["Location"]
    chunk = 5 * 1024 * 1024
    with django_capture_on_commit_callbacks(execute=True):
        for offset in range(0, len(data), chunk):
            response = alice.generic(
                "PATCH",
                url,
                data[offset : offset + chunk],
                content_type="application/offset+octet-stream",
                HTTP_UPLOAD_OFFSET=str(offset),
                **tus,
            )
            assert response.status_code == 204, response.content
    attachment = Attachment.objects.get(pk=attachment_id)
    head = s3.head_object(Bucket=bucket, Key=attachment.storage_key)
    assert head["ContentLength"] == len(data)
    # An S3 multipart ETag is "<md5 of the part md5s>-<number of parts>": two 8 MiB parts here.
    assert head["ETag"].strip('"').endswith("-2")
    assert attachment.state == "verified", attachment.reject_detail
    assert attachment.sha256 == sha256(data)


def test_a_missing_object_is_a_storage_error_that_the_task_retries(bucket, s3, device_for) -> None:
    from attachments.services import StorageUnavailable, verify_attachment

    alice = device_for("alice")
    attachment_id = str(uuid.uuid4())
    assert put(alice, png(), attachment_id=attachment_id).status_code == 201
    s3.delete_object(Bucket=bucket, Key=Attachment.objects.get(pk=attachment_id).storage_key)
    with pytest.raises(StorageUnavailable):
        verify_attachment(attachment_id=uuid.UUID(attachment_id), claim="task-1")
    attachment = Attachment.objects.get(pk=attachment_id)
    # Still waiting (nothing decided on a storage failure), lease released for the retry.
    assert (attachment.state, attachment.verify_until) == ("uploaded", None)
    assert "NoSuchKey" in attachment.verify_error or "404" in attachment.verify_error
