"""Bytes on disk and in storage: the staging area for partial uploads, streamed copies of request
bodies, and streamed reads from the default storage (filesystem or S3)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.utils.http import content_disposition_header
from storages.backends.s3 import S3Storage

CHUNK_SIZE = 64 * 1024

# What a storage backend raises when it is unreachable or failing (not when a file is bad).
STORAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, BotoCoreError, ClientError)


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def storage() -> Storage:
    return storages["default"]


def staging_dir() -> Path:
    path = Path(settings.ATTACHMENT_STAGING_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def staging_path(attachment_id: uuid.UUID) -> Path:
    """Where a tus upload's partial bytes wait. Named by the id, never by a client string."""
    return staging_dir() / f"{attachment_id}.part"


def new_storage_key(attachment_id: uuid.UUID, *, kind: str = "files") -> str:
    # The random part keeps a re-uploaded id from ever meeting the old object under the same key.
    return f"attachments/{kind}/{attachment_id}/{secrets.token_hex(8)}"


@contextlib.contextmanager
def temporary_file() -> Iterator[IO[bytes]]:
    """A temp file in the staging area (on the same volume, and never in memory)."""
    with tempfile.NamedTemporaryFile(dir=staging_dir(), prefix="tmp-", suffix=".bin") as fh:
        yield fh


class BodyTooShort(Exception):
    def __init__(self, received: int) -> None:
        super().__init__(f"the body ended after {received} bytes")
        self.received = received


def copy_body(
    source: Readable,
    target: IO[bytes],
    *,
    length: int,
    hashers: list[Any],
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Copy exactly `length` bytes from a request body in CHUNK_SIZE pieces, feeding each hasher.
    Raises BodyTooShort (with the count) when the client stops early."""
    copied = 0
    while copied < length:
        try:
            chunk = source.read(min(CHUNK_SIZE, length - copied))
        except OSError:
            # The client went away mid-body (gunicorn and runserver raise, others return b"").
            chunk = b""
        if not chunk:
            raise BodyTooShort(copied)
        target.write(chunk)
        for hasher in hashers:
            hasher.update(chunk)
        copied += len(chunk)
        if on_progress is not None:
            on_progress(copied)
    return copied


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def save(key: str, path: Path) -> str:
    """Store a local file under `key` (streamed: the S3 backend uploads in multipart parts)."""
    with path.open("rb") as fh:
        return storage().save(key, File(fh, name=key))


def save_bytes(key: str, content: bytes) -> str:
    with temporary_file() as fh:
        fh.write(content)
        fh.flush()
        return save(key, Path(fh.name))


def delete(key: str) -> None:
    if key:
        storage().delete(key)


def iter_stored(key: str) -> Iterator[bytes]:
    """Stream a stored object. django-storages' S3 file would download all of it into memory
    on open (django-storages #936), so S3 goes through the boto3 object body instead."""
    backend = storage()
    if isinstance(backend, S3Storage):
        body = backend.bucket.Object(backend._normalize_name(key)).get()["Body"]
        try:
            yield from body.iter_chunks(CHUNK_SIZE * 16)
        finally:
            body.close()
        return
    with backend.open(key, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE * 16):
            yield chunk


def presigned_url(key: str, *, filename: str, content_type: str, expire: int) -> str | None:
    """A short-lived S3 URL that makes S3 answer with our filename and sniffed type; None when the
    storage is not S3 (then the view streams the file itself)."""
    backend = storage()
    if not isinstance(backend, S3Storage):
        return None
    parameters = {
        "ResponseContentDisposition": content_disposition_header(as_attachment=True, filename=filename) or "attachment",
        "ResponseContentType": content_type,
    }
    return str(backend.url(key, parameters=parameters, expire=expire))


def fsync(fh: IO[bytes]) -> None:
    fh.flush()
    os.fsync(fh.fileno())
