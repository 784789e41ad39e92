"""Verification (magic bytes, Pillow under a pixel limit, PDF active content), the safety of
display names, the claim that makes the task safe to run twice, and the sweeper."""

from __future__ import annotations

import dataclasses
import struct
import tracemalloc
import uuid
import zlib
from datetime import timedelta

import pytest
from django.utils import timezone

from attachments import services
from attachments.inspection import (
    PdfLimits,
    PdfTooComplex,
    PdfUnreadable,
    pdf_active_content,
    pdf_object_active_content,
)
from attachments.models import Attachment, AttachmentLink
from attachments.services import clean_filename, sweep, verify_attachment
from audit.models import AuditEvent
from tests.attachments_support import jpeg, media, pdf, png, put

__all__ = ["media"]


@pytest.fixture
def alice(device_for, media):
    return device_for("alice")


def uploaded(client, data: bytes, content_type: str, filename: str = "photo.jpg") -> Attachment:
    attachment_id = str(uuid.uuid4())
    response = put(client, data, attachment_id=attachment_id, content_type=content_type, filename=filename)
    assert response.status_code == 201, response.content
    return Attachment.objects.get(pk=attachment_id)


def verdict(client, data: bytes, content_type: str = "image/jpeg") -> Attachment:
    attachment = uploaded(client, data, content_type)
    assert verify_attachment(attachment_id=attachment.pk) in ("verified", "rejected")
    attachment.refresh_from_db()
    return attachment


def png_bomb(width: int, height: int) -> bytes:
    """A real PNG header claiming width x height 8-bit grey pixels, with a few rows of zeros."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# --- spoofed and dangerous files ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"<!DOCTYPE html><html><body><script>fetch('/api/v1/me')</script></body></html>",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        b"<?php echo shell_exec($_GET['cmd']); ?>",
        b"GIF89a<?php system($_GET['c']); ?>",
    ],
    ids=["html", "svg-xml", "svg", "php", "gif-php"],
)
def test_a_file_renamed_to_jpg_is_rejected(alice, content) -> None:
    attachment = verdict(alice, content, "image/jpeg")
    assert attachment.state == "rejected"
    assert attachment.reject_reason == "type_not_allowed"
    assert AuditEvent.objects.filter(verb="attachment.rejected", object_id=str(attachment.pk)).count() == 1


def test_a_declared_type_that_disagrees_with_the_bytes_is_rejected(alice) -> None:
    attachment = verdict(alice, jpeg(), "image/png")
    assert (attachment.state, attachment.reject_reason) == ("rejected", "type_mismatch")
    assert attachment.sniffed_type == "image/jpeg"


@pytest.mark.parametrize("make,content_type", [(png, "image/png"), (jpeg, "image/jpeg")])
def test_real_images_are_verified_with_a_thumbnail(alice, media, make, content_type) -> None:
    attachment = verdict(alice, make(800, 600), content_type)
    assert attachment.state == "verified", attachment.reject_detail
    assert attachment.sniffed_type == content_type
    thumbnail = (media / attachment.thumbnail_key).read_bytes()
    assert thumbnail.startswith(b"\xff\xd8")


def test_jpg_is_an_alias_of_jpeg(alice) -> None:
    assert verdict(alice, jpeg(), "image/jpg").state == "verified"


def test_a_heic_container_is_accepted_by_its_brand(alice) -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200
    attachment = verdict(alice, heic, "image/heic")
    assert (attachment.state, attachment.sniffed_type) == ("verified", "image/heic")


def verify_measuring_memory(attachment: Attachment) -> int:
    """Verify the attachment in-process; the peak of Python allocations while it ran, in bytes."""
    tracemalloc.start()
    try:
        verify_attachment(attachment_id=attachment.pk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    attachment.refresh_from_db()
    return peak


def test_a_png_decompression_bomb_is_rejected_without_decoding_it(alice) -> None:
    bomb = png_bomb(100_000, 100_000)  # 10 gigapixels in a few kilobytes
    assert len(bomb) < 10_000
    attachment = uploaded(alice, bomb, "image/png")
    peak = verify_measuring_memory(attachment)
    assert (attachment.state, attachment.reject_reason) == ("rejected", "image_too_large")
    assert peak < 20 * 1024 * 1024


def test_an_image_just_over_the_pixel_limit_is_rejected(alice, settings) -> None:
    settings.ATTACHMENT_MAX_IMAGE_PIXELS = 100 * 100
    assert verdict(alice, png(101, 100), "image/png").reject_reason == "image_too_large"
    assert verdict(alice, png(100, 100), "image/png").state == "verified"


def test_a_truncated_image_is_rejected(alice) -> None:
    data = jpeg(400, 300)
    attachment = verdict(alice, data[: len(data) // 3], "image/jpeg")
    assert (attachment.state, attachment.reject_reason) == ("rejected", "image_undecodable")


def test_a_plain_pdf_is_verified(alice) -> None:
    assert verdict(alice, pdf(), "application/pdf").state == "verified"


@pytest.mark.parametrize(
    "extra,name",
    [
        (b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >> ", "JavaScript"),
        (b"/OpenAction 3 0 R ", "OpenAction"),
        (b"/AA << /O << /S /Launch /F (cmd.exe) >> >> ", "Launch"),
        (b"/Names << /EmbeddedFiles 4 0 R >> ", "EmbeddedFiles"),
        (b"/Names << /J#61vaScript 5 0 R >> ", "JavaScript"),
    ],
    ids=["javascript", "openaction", "launch", "embedded", "hex-escaped"],
)
def test_a_pdf_with_active_content_is_rejected(alice, extra, name) -> None:
    attachment = verdict(alice, pdf(extra), "application/pdf")
    assert (attachment.state, attachment.reject_reason) == ("rejected", "pdf_active_content")
    assert name in attachment.reject_detail


def compressed_pdf(catalog_extra: bytes = b"", *, padding: int = 0) -> bytes:
    """A PDF 1.5 whose catalog and page tree live only in a FlateDecode object stream, indexed by
    a cross-reference stream: none of their names is in the file's raw bytes. `padding` inflates
    the object stream by that many spaces (a decompression bomb compresses to almost nothing)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b">>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    offsets, body = [], b""
    for obj in objects:
        offsets.append(len(body))
        body += obj + b"\n"
    header = b" ".join(b"%d %d" % (number, offset) for number, offset in enumerate(offsets, start=1)) + b"\n"
    packed = zlib.compress(header + body + b" " * padding)
    out = b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"
    objstm_at = len(out)
    out += (
        b"3 0 obj\n<< /Type /ObjStm /N %d /First %d /Filter /FlateDecode /Length %d >>\nstream\n"
        % (len(objects), len(header), len(packed))
        + packed
        + b"\nendstream\nendobj\n"
    )
    xref_at = len(out)
    rows = [(0, 0, 65535), (2, 3, 0), (2, 3, 1), (1, objstm_at, 0), (1, xref_at, 0)]
    table = zlib.compress(b"".join(bytes([kind]) + a.to_bytes(4, "big") + b.to_bytes(2, "big") for kind, a, b in rows))
    out += (
        b"4 0 obj\n<< /Type /XRef /Size 5 /W [1 4 2] /Root 1 0 R /Filter /FlateDecode /Length %d >>\nstream\n"
        % len(table)
        + table
        + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % xref_at
    )
    return out


HIDDEN_JAVASCRIPT = b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >> "
LIMITS = PdfLimits(max_bytes=1 << 20, max_objects=1000, max_stream_bytes=1 << 20, max_seconds=30)


def test_javascript_hidden_in_a_compressed_object_stream_is_rejected(alice, tmp_path) -> None:
    data = compressed_pdf(HIDDEN_JAVASCRIPT)
    path = tmp_path / "hidden.pdf"
    path.write_bytes(data)
    assert b"JavaScript" not in data and b"OpenAction" not in data
    assert pdf_active_content(path) == []  # the raw scan alone lets it through
    attachment = verdict(alice, data, "application/pdf")
    assert (attachment.state, attachment.reject_reason) == ("rejected", "pdf_active_content")
    assert attachment.reject_detail == "The PDF carries active content: JS, JavaScript, OpenAction."


def test_a_clean_pdf_with_compressed_objects_is_verified(alice) -> None:
    assert verdict(alice, compressed_pdf(), "application/pdf").state == "verified"


def test_an_object_stream_that_does_not_decode_is_rejected_as_unreadable(alice) -> None:
    data = compressed_pdf(HIDDEN_JAVASCRIPT)
    start = data.index(b"stream\n") + len(b"stream\n")
    broken = data[:start] + bytes(byte ^ 0x55 for byte in data[start : start + 30]) + data[start + 30 :]
    attachment = verdict(alice, broken, "application/pdf")
    assert (attachment.state, attachment.reject_reason) == ("rejected", "pdf_unreadable")


def test_a_truncated_pdf_with_compressed_objects_is_rejected_as_unreadable(alice) -> None:
    data = compressed_pdf()
    attachment = verdict(alice, data[: len(data) - 60], "application/pdf")
    assert (attachment.state, attachment.reject_reason) == ("rejected", "pdf_unreadable")


@pytest.mark.parametrize(
    "data",
    [pdf(), b"%PDF-1.4\n" + bytes(range(256)).replace(b"/", b"0") * 256 + b"\n%%EOF\n"],
    ids=["no-xref", "noise"],
)
def test_a_pdf_pypdf_cannot_parse_without_compressed_objects_is_judged_by_the_raw_scan(alice, tmp_path, data) -> None:
    path = tmp_path / "odd.pdf"
    path.write_bytes(data)
    with pytest.raises(PdfUnreadable) as failure:
        pdf_object_active_content(path, limits=LIMITS)
    assert not failure.value.compressed
    assert verdict(alice, data, "application/pdf").state == "verified"


def test_a_decompression_bomb_in_an_object_stream_is_rejected_within_the_cap(alice) -> None:
    bomb = compressed_pdf(padding=64 * 1024 * 1024)  # 64 MiB of spaces, 16 MiB allowed
    assert len(bomb) < 100_000
    attachment = uploaded(alice, bomb, "application/pdf")
    peak = verify_measuring_memory(attachment)
    assert (attachment.state, attachment.reject_reason) == ("rejected", "pdf_too_complex")
    assert peak < 40 * 1024 * 1024


@pytest.mark.parametrize("cap", [1, 3], ids=["raw-count", "pypdf-count"])
def test_a_pdf_with_compressed_objects_over_the_object_cap_is_rejected(alice, settings, cap) -> None:
    # 2 object headers in the raw bytes, 5 cross-reference entries in the stream pypdf reads.
    settings.ATTACHMENT_PDF_MAX_OBJECTS = cap
    assert verdict(alice, compressed_pdf(), "application/pdf").reject_reason == "pdf_too_complex"
    settings.ATTACHMENT_PDF_MAX_OBJECTS = 5
    assert verdict(alice, compressed_pdf(), "application/pdf").state == "verified"


def test_a_pdf_with_compressed_objects_over_the_parse_size_is_rejected(alice, settings) -> None:
    settings.ATTACHMENT_PDF_PARSE_MAX_BYTES = len(compressed_pdf()) - 1
    assert verdict(alice, compressed_pdf(), "application/pdf").reject_reason == "pdf_too_complex"


def test_a_pdf_without_compressed_objects_over_the_caps_is_judged_by_the_raw_scan(alice, settings) -> None:
    settings.ATTACHMENT_PDF_PARSE_MAX_BYTES = 10
    assert verdict(alice, pdf(), "application/pdf").state == "verified"
    settings.ATTACHMENT_PDF_PARSE_MAX_BYTES = 1 << 20
    settings.ATTACHMENT_PDF_MAX_OBJECTS = 1
    assert verdict(alice, pdf(), "application/pdf").state == "verified"
    assert verdict(alice, pdf(HIDDEN_JAVASCRIPT), "application/pdf").reject_reason == "pdf_active_content"


def test_the_structural_scan_stops_at_its_deadline(tmp_path) -> None:
    path = tmp_path / "slow.pdf"
    path.write_bytes(compressed_pdf())
    with pytest.raises(PdfTooComplex, match="too long"):
        pdf_object_active_content(path, limits=dataclasses.replace(LIMITS, max_seconds=-1))


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("..\\..\\windows\\system32\\evil.png", "evil.png"),
        ("/var/www/../.htaccess", "htaccess"),
        ("pho\x00to\x1b[31m\r\n.jpg", "photo[31m.jpg"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ('a<b>c:d"e|f?g*h.png', "abcdefgh.png"),
        ("...", "attachment"),
        ("", "attachment"),
    ],
)
def test_display_names_are_sanitised(raw, expected) -> None:
    assert clean_filename(raw) == expected


def test_a_long_unicode_name_is_cut_to_200_bytes_of_valid_utf8() -> None:
    name = clean_filename("Überprüfung-" + "ß" * 300 + ".jpg")
    assert len(name.encode("utf-8")) <= 200
    assert name.startswith("Überprüfung-ß")


def test_a_reserved_windows_name_is_not_kept_as_is() -> None:
    assert clean_filename("CON.jpg").upper() != "CON.JPG"


def test_the_client_name_never_reaches_the_storage_key(alice) -> None:
    attachment = uploaded(alice, png(), "image/png", filename="../../../../tmp/owned.png")
    assert attachment.filename == "owned.png"
    assert "owned" not in attachment.storage_key and ".." not in attachment.storage_key


# --- the claim: safe to run twice ------------------------------------------------------------------


def test_running_the_verification_twice_decides_once(alice) -> None:
    attachment = uploaded(alice, png(), "image/png")
    assert verify_attachment(attachment_id=attachment.pk, claim="a") == "verified"
    assert verify_attachment(attachment_id=attachment.pk, claim="a") == "skipped"
    assert verify_attachment(attachment_id=attachment.pk, claim="b") == "skipped"
    assert AuditEvent.objects.filter(verb="attachment.verified", object_id=str(attachment.pk)).count() == 1


def test_a_held_lease_keeps_other_tasks_out_but_lets_the_same_message_back_in(alice) -> None:
    attachment = uploaded(alice, png(), "image/png")
    Attachment.objects.filter(pk=attachment.pk).update(
        verify_until=timezone.now() + timedelta(minutes=5), verify_claim="task-1", verify_attempts=1
    )
    assert verify_attachment(attachment_id=attachment.pk, claim="task-2") == "skipped"
    # The same task id again is the broker redelivering a message whose worker died.
    assert verify_attachment(attachment_id=attachment.pk, claim="task-1") == "verified"
    assert Attachment.objects.get(pk=attachment.pk).verify_attempts == 2


def test_it_gives_up_after_the_maximum_attempts(alice, settings) -> None:
    settings.ATTACHMENT_VERIFY_MAX_ATTEMPTS = 2
    attachment = uploaded(alice, png(), "image/png")
    Attachment.objects.filter(pk=attachment.pk).update(verify_attempts=2, verify_error="OSError('disk')")
    assert verify_attachment(attachment_id=attachment.pk) == "rejected"
    attachment.refresh_from_db()
    assert attachment.reject_reason == "verification_failed"
    assert "disk" in attachment.reject_detail


# --- the sweeper -----------------------------------------------------------------------------------


def test_the_sweeper_recovers_a_verification_whose_message_was_lost(alice) -> None:
    attachment = uploaded(alice, png(), "image/png")  # its on_commit enqueue never ran: lost
    assert sweep()["requeued"] == 0  # too fresh: the enqueued task may still be on its way
    Attachment.objects.filter(pk=attachment.pk).update(uploaded_at=timezone.now() - timedelta(minutes=5))
    assert sweep()["requeued"] == 1  # eager here: it ran
    assert Attachment.objects.get(pk=attachment.pk).state == "verified"


def test_the_sweeper_leaves_a_verification_under_a_live_lease_alone(alice) -> None:
    attachment = uploaded(alice, png(), "image/png")
    Attachment.objects.filter(pk=attachment.pk).update(
        uploaded_at=timezone.now() - timedelta(minutes=5), verify_until=timezone.now() + timedelta(minutes=1)
    )
    assert sweep()["requeued"] == 0


def test_the_sweeper_drops_abandoned_partial_uploads(alice, user, media, django_capture_on_commit_callbacks):
    attachment, _ = services.create_upload(
        attachment_id=uuid.uuid4(),
        owner=user("alice"),
        device_id=None,
        length=100,
        filename="a.png",
        content_type="image/png",
        sha256="",
    )
    staged = media.parent / "staging" / f"{attachment.pk}.part"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"x" * 10)
    assert sweep()["expired"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep(now=timezone.now() + timedelta(days=8))["expired"] == 1
    assert not Attachment.objects.filter(pk=attachment.pk).exists()
    assert not staged.exists()


def test_the_sweeper_deletes_files_never_linked_after_the_grace_period(
    alice, media, django_capture_on_commit_callbacks
):
    orphan = uploaded(alice, png(), "image/png")
    linked = uploaded(alice, png(color="blue"), "image/png")
    AttachmentLink.objects.create(attachment=linked, record_id=uuid.uuid4(), team_id=1)
    later = timezone.now() + timedelta(days=31)
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep(now=later)["deleted"] == 1
    assert not Attachment.objects.filter(pk=orphan.pk).exists()
    assert not (media / orphan.storage_key).exists()
    assert (media / linked.storage_key).exists()
    event = AuditEvent.objects.get(verb="attachment.deleted")
    assert event.object_id == str(orphan.pk) and event.source == "system"


def test_beat_runs_the_sweeper_every_few_minutes(settings) -> None:
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["sweep-attachments"]
    assert entry["task"] == "attachments.tasks.sweep_attachments"
    assert entry["schedule"] <= timedelta(minutes=10)
    app.loader.import_default_modules()
    assert {"attachments.tasks.sweep_attachments", "attachments.tasks.verify_attachment"} <= set(app.tasks)


def test_only_storage_failures_are_retried_with_backoff(alice, monkeypatch) -> None:
    from attachments import files
    from attachments.services import StorageUnavailable
    from attachments.tasks import verify_attachment as task

    assert task.acks_late is True
    assert tuple(task.autoretry_for) == (StorageUnavailable,)
    assert task.retry_backoff and task.max_retries
    attachment = uploaded(alice, png(), "image/png")

    def down(key):
        raise OSError("storage is down")

    monkeypatch.setattr(files, "iter_stored", down)
    with pytest.raises(StorageUnavailable):
        verify_attachment(attachment_id=attachment.pk, claim="t1")
    attachment.refresh_from_db()
    assert (attachment.state, attachment.verify_until, attachment.verify_error) == (
        "uploaded",
        None,
        "OSError('storage is down')",
    )
    monkeypatch.undo()
    # A bad file is an outcome: the task returns it, nothing is raised, nothing retried.
    fake = uploaded(alice, b"<html></html>", "image/png")
    assert task.apply(args=[str(fake.pk)]).get() == "rejected"
