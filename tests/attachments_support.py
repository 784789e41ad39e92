"""Helpers for the attachment tests: real files made on the spot, storage in a temp dir."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from attachments.models import Attachment


def png(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def jpeg(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(out, "JPEG")
    return out.getvalue()


def pdf(extra: bytes = b"") -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R " + extra + b">>\nendobj\n"
        b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(
    client: Any,
    data: bytes,
    *,
    attachment_id: str | None = None,
    content_type: str = "image/png",
    filename: str = "photo.png",
    sha: str | None = None,
    **extra: Any,
) -> Any:
    attachment_id = attachment_id or str(uuid.uuid4())
    headers = {"HTTP_X_SHA256": sha if sha is not None else sha256(data), "HTTP_X_FILENAME": filename, **extra}
    return client.put(f"/api/v1/attachments/{attachment_id}", data=data, content_type=content_type, **headers)


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def state_of(attachment_id: str) -> str:
    return Attachment.objects.get(pk=attachment_id).state


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    """Filesystem storage and the staging area in a temp dir."""
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    settings.ATTACHMENT_STAGING_DIR = tmp_path / "staging"
    return root
