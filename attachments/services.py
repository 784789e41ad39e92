"""Every state change of an attachment has one entry point here. Each owns its transaction,
journals through `audit.record_event` inside it, and schedules side effects (the verification
task, deleting stored bytes) with `transaction.on_commit`.

Long work (streaming a body, hashing, storing, decoding) never runs inside a transaction: a PATCH
holds a lease in the row instead (`patch_token`/`patch_until`), and verification holds
`verify_until`/`verify_claim`. Short transactions with a row lock decide the outcome."""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import unicodedata
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from pathvalidate import sanitize_filename

from attachments import files
from attachments.inspection import PdfLimits, Verdict, inspect_file, normalise_type
from attachments.models import Attachment, AttachmentHold, AttachmentLink, State
from audit.services import record_event

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_FILENAME_BYTES = 200


class AttachmentError(Exception):
    """A request the service refuses; `status` is the HTTP status the API answers with."""

    def __init__(self, code: str, message: str, *, status: int = 400, fields: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields or {}


class StorageUnavailable(Exception):
    """The storage backend failed (not the file): the verification task retries with backoff."""


# --- names and metadata -----------------------------------------------------------------------


def clean_filename(raw: str) -> str:
    """A display name safe to show and to put in Content-Disposition: the last path segment,
    without control or bidi-override characters, sanitised for every OS by pathvalidate, at most
    MAX_FILENAME_BYTES of UTF-8. It is only ever a label: storage keys are generated."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    name = str(sanitize_filename(name, platform="universal", max_len=MAX_FILENAME_BYTES))
    name = name.strip().lstrip(".").strip()
    return name or "attachment"


def check_sha256(value: str, *, field: str) -> str:
    value = value.strip().lower()
    if not SHA256_HEX.match(value):
        raise AttachmentError(
            "invalid_sha256", "The sha256 must be 64 hex digits.", fields={field: ["Not a hex sha256."]}
        )
    return value


def content_url(attachment_id: uuid.UUID) -> str:
    return reverse("attachment-content", kwargs={"attachment_id": attachment_id})


def metadata(attachment: Attachment) -> dict[str, Any]:
    """The wire shape, and what a record stores for a reference: the server's view of the file."""
    return {
        "id": str(attachment.pk),
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "state": attachment.state,
        "url": content_url(attachment.pk),
    }


def _journal(attachment: Attachment, verb: str, *, source: str, actor: User | None = None, **extra: Any) -> None:
    changes = {"state": [extra.pop("before", None), attachment.state]} if "before" in extra else {}
    changes.update({key: [None, value] for key, value in extra.items()})
    record_event(
        verb=verb,
        source=source,
        actor=actor,
        device_id=attachment.device_id if source == "device" else None,
        object_type="attachment",
        object_id=attachment.pk,
        changes=changes,
    )


def _enqueue_verification(attachment_id: uuid.UUID) -> None:
    from attachments.tasks import verify_attachment

    transaction.on_commit(lambda: verify_attachment.delay(str(attachment_id)))


# --- simple upload (PUT) ------------------------------------------------------------------------


def upload_simple(
    *,
    attachment_id: uuid.UUID,
    owner: User,
    device_id: uuid.UUID | None,
    filename: str,
    content_type: str,
    sha256: str,
    length: int,
    body: files.Readable,
) -> tuple[Attachment, bool]:
    """Store a whole file sent in one request. Returns (attachment, created). The same id with the
    same sha256 returns the original (without reading the body again); another sha256 is a
    conflict. The bytes must hash to `sha256`, or nothing is stored.

    The row is written (state `uploading`, with the storage key and an expiry) before the bytes
    go to storage, and marked uploaded after: a crash in between leaves a row that names the
    object, which the sweeper's expiry deletes with it, or that a retry of the PUT takes over."""
    sha256 = check_sha256(sha256, field="X-Sha256")
    declared_type = normalise_type(content_type)
    if not declared_type or declared_type == "application/octet-stream":
        raise AttachmentError("content_type_required", "Send the file's type as Content-Type.", status=415)
    if length > settings.ATTACHMENT_SIMPLE_MAX_BYTES:
        raise AttachmentError(
            "file_too_large",
            f"A simple upload is at most {settings.ATTACHMENT_SIMPLE_MAX_BYTES} bytes; use tus for larger files.",
            status=413,
        )
    existing = Attachment.objects.filter(pk=attachment_id).first()
    if existing is not None and not _abandoned_store(existing, owner=owner, sha256=sha256, now=timezone.now()):
        return _replay(existing, owner=owner, sha256=sha256), False

    with files.temporary_file() as tmp:
        digest = hashlib.sha256()
        try:
            files.copy_body(body, tmp, length=length, hashers=[digest])
        except files.BodyTooShort as short:
            raise AttachmentError(
                "incomplete_body", f"The body ended after {short.received} of {length} bytes."
            ) from None
        if digest.hexdigest() != sha256:
            raise AttachmentError(
                "checksum_mismatch",
                "The bytes do not match X-Sha256; nothing was stored.",
                status=422,
                fields={"X-Sha256": ["Does not match the body."]},
            )
        files.fsync(tmp)
        token = uuid.uuid4()
        try:
            attachment = _start_store(
                attachment_id=attachment_id,
                owner=owner,
                device_id=device_id,
                filename=filename,
                declared_type=declared_type,
                sha256=sha256,
                length=length,
                token=token,
            )
        except IntegrityError:
            # The same id won a race with us: the primary key decided. Answer like a replay.
            return _replay(Attachment.objects.get(pk=attachment_id), owner=owner, sha256=sha256), False
        try:
            key = files.save(attachment.storage_key, Path(tmp.name))
        except BaseException:
            _abandon_store(attachment.pk, token=token, key=attachment.storage_key)
            raise
    return _finish_store(attachment.pk, token=token, key=key), True


def _storing(attachment: Attachment) -> bool:
    """A simple upload between its row and its stored bytes: every byte arrived and matched (a
    tus upload sets `computed_sha256` only when it leaves `uploading`)."""
    return attachment.state == State.UPLOADING and bool(attachment.computed_sha256)


def _abandoned_store(attachment: Attachment, *, owner: User, sha256: str, now: datetime) -> bool:
    """A simple upload of these bytes whose request died before it finished (its lease ran out):
    a retry of the PUT takes it over."""
    return (
        _storing(attachment)
        and attachment.owner_id == owner.pk
        and attachment.declared_sha256 == sha256
        and (attachment.patch_until is None or attachment.patch_until < now)
    )


def _start_store(
    *,
    attachment_id: uuid.UUID,
    owner: User,
    device_id: uuid.UUID | None,
    filename: str,
    declared_type: str,
    sha256: str,
    length: int,
    token: uuid.UUID,
) -> Attachment:
    """The row of a simple upload whose bytes are about to be stored: `uploading`, naming the
    storage key, expiring like a tus upload, and leased to this request (the sweeper and a
    retry leave it alone while the lease lasts)."""
    now = timezone.now()
    with transaction.atomic():
        stale = Attachment.objects.select_for_update().filter(pk=attachment_id).first()
        if stale is not None:
            if not _abandoned_store(stale, owner=owner, sha256=sha256, now=now):
                raise IntegrityError("the attachment id was taken meanwhile")
            _delete_row(stale, [stale.storage_key])
        return Attachment.objects.create(
            id=attachment_id,
            owner=owner,
            device_id=device_id,
            filename=clean_filename(filename),
            storage_key=files.new_storage_key(attachment_id),
            declared_size=length,
            declared_type=declared_type,
            declared_sha256=sha256,
            received=length,
            computed_sha256=sha256,
            state=State.UPLOADING,
            expires_at=now + settings.ATTACHMENT_UPLOAD_EXPIRY,
            patch_token=token,
            patch_until=now + timedelta(seconds=settings.ATTACHMENT_PATCH_LEASE),
        )


def _abandon_store(attachment_id: uuid.UUID, *, token: uuid.UUID, key: str) -> None:
    """The storage refused the bytes: drop the row and whatever part of the object was written."""
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().filter(pk=attachment_id, patch_token=token).first()
        if attachment is not None:
            _delete_row(attachment, [key])


def _finish_store(attachment_id: uuid.UUID, *, token: uuid.UUID, key: str) -> Attachment:
    """The bytes are stored: the upload is complete, verification is enqueued."""
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().filter(pk=attachment_id, patch_token=token).first()
        if attachment is not None:
            attachment.storage_key = key
            attachment.state = State.UPLOADED
            attachment.uploaded_at = timezone.now()
            attachment.expires_at = None
            attachment.patch_token = None
            attachment.patch_until = None
            attachment.save()
            _journal_uploaded(attachment, actor=attachment.owner)
            _enqueue_verification(attachment.pk)
    if attachment is None:
        # Our lease ran out and a retry took the upload over (deleting the row): the object is
        # not ours to keep. Outside the transaction: raising inside would drop an on_commit.
        with contextlib.suppress(*files.STORAGE_ERRORS):
            files.delete(key)
        raise AttachmentError("attachment_incomplete", "This upload was taken over by a retry.", status=409)
    return attachment


def _replay(existing: Attachment, *, owner: User, sha256: str) -> Attachment:
    if existing.owner_id != owner.pk or existing.declared_sha256 != sha256:
        raise AttachmentError(
            "attachment_conflict", "This attachment id is already used for other content.", status=409
        )
    if _storing(existing):
        raise AttachmentError(
            "attachment_incomplete", "This attachment is being stored by another request; retry shortly.", status=409
        )
    if existing.state == State.UPLOADING:
        raise AttachmentError(
            "attachment_incomplete", "This attachment is being uploaded with tus; finish that upload.", status=409
        )
    return existing


def _journal_uploaded(attachment: Attachment, *, actor: User) -> None:
    _journal(
        attachment,
        "attachment.uploaded",
        source="device" if attachment.device_id else "admin",
        actor=actor,
        before=None,
        filename=attachment.filename,
        declared_type=attachment.declared_type,
        size=attachment.declared_size,
        sha256=attachment.computed_sha256,
    )


# --- tus uploads --------------------------------------------------------------------------------


def create_upload(
    *,
    attachment_id: uuid.UUID | None,
    owner: User,
    device_id: uuid.UUID | None,
    length: int,
    filename: str,
    content_type: str,
    sha256: str,
) -> tuple[Attachment, bool]:
    """The tus creation step: a row in state `uploading` with its expiry. Creating the same id
    again (same owner, length and sha256) returns the existing upload, so a client that lost the
    Location can carry on. A completed upload rejected for a checksum mismatch may start over."""
    if length < 0:
        raise AttachmentError("invalid_upload_length", "Upload-Length must be a non-negative integer.")
    if length > settings.ATTACHMENT_MAX_BYTES:
        raise AttachmentError(
            "file_too_large", f"An upload is at most {settings.ATTACHMENT_MAX_BYTES} bytes.", status=413
        )
    sha256 = check_sha256(sha256, field="Upload-Metadata.sha256") if sha256 else ""
    attachment_id = attachment_id or uuid.uuid4()
    now = timezone.now()
    for _ in range(2):
        existing = Attachment.objects.filter(pk=attachment_id).first()
        if existing is not None:
            if existing.owner_id != owner.pk or (existing.declared_sha256, existing.declared_size) != (sha256, length):
                raise AttachmentError(
                    "attachment_conflict", "This attachment id is already used for other content.", status=409
                )
            if not _restartable(existing):
                return existing, False
        try:
            with transaction.atomic():
                if existing is not None:
                    Attachment.objects.filter(pk=existing.pk, state=State.REJECTED).delete()
                attachment = Attachment.objects.create(
                    id=attachment_id,
                    owner=owner,
                    device_id=device_id,
                    filename=clean_filename(filename),
                    storage_key=files.new_storage_key(attachment_id),
                    declared_size=length,
                    declared_type=normalise_type(content_type),
                    declared_sha256=sha256,
                    state=State.UPLOADING,
                    expires_at=now + settings.ATTACHMENT_UPLOAD_EXPIRY,
                )
            return attachment, True
        except IntegrityError:
            continue  # a concurrent create of the same id won; judge it like any existing one
    raise AttachmentError("attachment_conflict", "This attachment id is being created concurrently.", status=409)


def _restartable(attachment: Attachment) -> bool:
    return (
        attachment.state == State.REJECTED
        and attachment.reject_reason == "checksum_mismatch"
        and attachment.uploaded_at is None
        and not attachment.links.exists()
    )


def upload_for(*, attachment_id: uuid.UUID, owner: User) -> Attachment:
    """The upload as its owner sees it (HEAD). Another user's upload does not exist for them."""
    attachment = Attachment.objects.filter(pk=attachment_id, owner=owner).first()
    if attachment is None:
        raise AttachmentError("upload_not_found", "There is no such upload.", status=404)
    if _expired(attachment, timezone.now()):
        raise AttachmentError("upload_expired", "This upload expired; start a new one.", status=410)
    return attachment


def _expired(attachment: Attachment, now: datetime) -> bool:
    return attachment.state == State.UPLOADING and attachment.expires_at is not None and attachment.expires_at < now


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # "sha1" | "sha256"
    digest: bytes


def append_chunk(
    *,
    attachment_id: uuid.UUID,
    owner: User,
    offset: int,
    length: int,
    checksum: Checksum | None,
    body: files.Readable,
) -> Attachment:
    """One tus PATCH: append `length` bytes at `offset` to the staging file.

    The row is locked only to take the PATCH lease and, at the end, to move the offset: the
    body itself streams outside any transaction, so a slow phone never holds a database lock
    (on SQLite that lock would stop every other writer). A chunk whose Upload-Checksum does not
    match is discarded. A body cut short (the client lost signal) keeps the bytes that arrived,
    as tus intends, unless it carried a checksum that can no longer be checked."""
    token = uuid.uuid4()
    lease = timedelta(seconds=settings.ATTACHMENT_PATCH_LEASE)
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().filter(pk=attachment_id, owner=owner).first()
        if attachment is None:
            raise AttachmentError("upload_not_found", "There is no such upload.", status=404)
        now = timezone.now()
        if _expired(attachment, now):
            raise AttachmentError("upload_expired", "This upload expired; start a new one.", status=410)
        if _storing(attachment):
            raise AttachmentError(
                "attachment_incomplete", "This attachment is being stored by a simple upload (PUT).", status=409
            )
        if offset != attachment.received:
            raise AttachmentError(
                "offset_mismatch",
                f"Upload-Offset is {offset}, but the server has {attachment.received} bytes; HEAD to resume.",
                status=409,
            )
        if attachment.state != State.UPLOADING:
            if length == 0:
                return attachment
            raise AttachmentError("upload_finished", "This upload is complete.", status=409)
        if offset + length > attachment.declared_size:
            raise AttachmentError(
                "upload_too_long", "The chunk goes past the Upload-Length of this upload.", status=413
            )
        if attachment.patch_until is not None and attachment.patch_until > now:
            raise AttachmentError(
                "upload_locked", "Another request is writing to this upload; retry shortly.", status=423
            )
        Attachment.objects.filter(pk=attachment.pk).update(patch_token=token, patch_until=now + lease)

    path = files.staging_path(attachment.pk)
    received = _write_chunk(attachment.pk, path, body, token=token, offset=offset, length=length, checksum=checksum)
    if received < attachment.declared_size:
        return _advance(attachment.pk, token=token, offset=offset, received=received)
    return _complete(attachment.pk, path, token=token, offset=offset)


def _write_chunk(
    attachment_id: uuid.UUID,
    path: Path,
    body: files.Readable,
    *,
    token: uuid.UUID,
    offset: int,
    length: int,
    checksum: Checksum | None,
) -> int:
    lease = timedelta(seconds=settings.ATTACHMENT_PATCH_LEASE)
    renewed = [time.monotonic()]

    def renew(_copied: int) -> None:
        # Keep the lease while the body flows; a dead process stops renewing and loses it.
        if time.monotonic() - renewed[0] > lease.total_seconds() / 4:
            Attachment.objects.filter(pk=attachment_id, patch_token=token).update(patch_until=timezone.now() + lease)
            renewed[0] = time.monotonic()

    hasher = hashlib.new(checksum.algorithm) if checksum else None
    with _open_staging(path) as fh:
        # Bytes past the committed offset are from a PATCH that died before it committed.
        fh.truncate(offset)
        fh.seek(offset)
        try:
            files.copy_body(body, fh, length=length, hashers=[hasher] if hasher else [], on_progress=renew)
            copied = length
        except files.BodyTooShort as short:
            copied = short.received
            if checksum is not None:
                fh.truncate(offset)
                _release(attachment_id, token)
                raise AttachmentError(
                    "incomplete_body", f"The body ended after {copied} of {length} bytes; chunk discarded."
                ) from None
        except BaseException:
            fh.truncate(offset)
            _release(attachment_id, token)
            raise
        if hasher is not None and checksum is not None and hasher.digest() != checksum.digest:
            fh.truncate(offset)
            _release(attachment_id, token)
            raise AttachmentError(
                "checksum_mismatch", "Upload-Checksum does not match the chunk; it was discarded.", status=460
            )
        files.fsync(fh)
    return offset + copied


@contextlib.contextmanager
def _open_staging(path: Path) -> Any:
    fh = path.open("r+b") if path.exists() else path.open("w+b")
    try:
        yield fh
    finally:
        fh.close()


def _release(attachment_id: uuid.UUID, token: uuid.UUID) -> None:
    Attachment.objects.filter(pk=attachment_id, patch_token=token).update(patch_token=None, patch_until=None)


def _lease_lost() -> AttachmentError:
    return AttachmentError("upload_locked", "The upload was taken over by another request; HEAD to resume.", status=409)


def _advance(attachment_id: uuid.UUID, *, token: uuid.UUID, offset: int, received: int) -> Attachment:
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().get(pk=attachment_id)
        if attachment.patch_token != token or attachment.received != offset:
            raise _lease_lost()
        attachment.received = received
        attachment.patch_token = None
        attachment.patch_until = None
        attachment.save(update_fields=["received", "patch_token", "patch_until"])
    return attachment


def _complete(attachment_id: uuid.UUID, path: Path, *, token: uuid.UUID, offset: int) -> Attachment:
    """The last byte arrived: check the whole file against the declared sha256, store it (still
    under the PATCH lease, outside any transaction), then mark it uploaded and enqueue verification."""
    attachment = Attachment.objects.get(pk=attachment_id)
    computed = files.sha256_of(path)
    key = ""
    if not attachment.declared_sha256 or computed == attachment.declared_sha256:
        key = files.save(attachment.storage_key, path)
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().get(pk=attachment_id)
        if attachment.patch_token != token or attachment.received != offset:
            if key:
                transaction.on_commit(lambda: files.delete(key))
            raise _lease_lost()
        attachment.received = attachment.declared_size
        attachment.computed_sha256 = computed
        attachment.patch_token = None
        attachment.patch_until = None
        attachment.expires_at = None
        if key:
            attachment.storage_key = key
            attachment.state = State.UPLOADED
            attachment.uploaded_at = timezone.now()
            attachment.save()
            _journal_uploaded(attachment, actor=attachment.owner)
            _enqueue_verification(attachment.pk)
        else:
            attachment.state = State.REJECTED
            attachment.reject_reason = "checksum_mismatch"
            attachment.reject_detail = f"The bytes hash to {computed}, not the declared {attachment.declared_sha256}."
            attachment.save()
            _journal(
                attachment,
                "attachment.rejected",
                source="device",
                actor=attachment.owner,
                before=State.UPLOADING,
                reason=attachment.reject_reason,
            )
        transaction.on_commit(lambda: path.unlink(missing_ok=True))
    return attachment


def terminate_upload(*, attachment_id: uuid.UUID, owner: User) -> None:
    """tus termination: drop an upload and its bytes. A file that a record or a pending review
    references stays."""
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().filter(pk=attachment_id, owner=owner).first()
        if attachment is None:
            raise AttachmentError("upload_not_found", "There is no such upload.", status=404)
        if attachment.patch_until is not None and attachment.patch_until > timezone.now():
            raise AttachmentError("upload_locked", "A request is writing to this upload; retry shortly.", status=423)
        if attachment.links.exists():
            raise AttachmentError("attachment_in_use", "A record references this attachment.", status=409)
        if AttachmentHold.objects.filter(attachment_id=attachment.pk, released_at__isnull=True).exists():
            raise AttachmentError(
                "attachment_in_use", "A review waiting for an officer references this attachment.", status=409
            )
        if attachment.uploaded_at is not None:
            _journal(attachment, "attachment.deleted", source="device", actor=owner, reason="terminated")
        # An unfinished upload's key too: a crash may have stored its bytes without marking it.
        _delete_row(attachment, [attachment.storage_key, attachment.thumbnail_key])


def _delete_row(attachment: Attachment, keys: list[str]) -> None:
    path = files.staging_path(attachment.pk)
    attachment.delete()

    def cleanup() -> None:
        path.unlink(missing_ok=True)
        for key in keys:
            with contextlib.suppress(*files.STORAGE_ERRORS):
                files.delete(key)

    transaction.on_commit(cleanup)


# --- verification -------------------------------------------------------------------------------


def verify_attachment(*, attachment_id: uuid.UUID, claim: str = "") -> str:
    """Re-hash the stored bytes, sniff, decode and decide: verified or rejected. Safe to run
    twice and concurrently: work is claimed with a conditional UPDATE on the state and the lease
    (a redelivered message carries the same task id as `claim`, and may take its own lease
    back), and only the first decision on an `uploaded` row counts."""
    now = timezone.now()
    free = Q(verify_until__isnull=True) | Q(verify_until__lt=now)
    if claim:
        free |= Q(verify_claim=claim)
    claimed = Attachment.objects.filter(free, pk=attachment_id, state=State.UPLOADED).update(
        verify_until=now + timedelta(seconds=settings.ATTACHMENT_VERIFY_LEASE),
        verify_claim=claim,
        verify_attempts=F("verify_attempts") + 1,
    )
    if not claimed:
        return "skipped"
    attachment = Attachment.objects.get(pk=attachment_id)
    if attachment.verify_attempts > settings.ATTACHMENT_VERIFY_MAX_ATTEMPTS:
        detail = f"Gave up after {attachment.verify_attempts - 1} attempts: {attachment.verify_error}"
        return _decide(attachment.pk, Verdict("", "verification_failed", detail[:500]), computed="", thumbnail_key="")

    with files.temporary_file() as tmp:
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in files.iter_stored(attachment.storage_key):
                tmp.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            tmp.flush()
        except files.STORAGE_ERRORS as exc:
            _storage_failed(attachment.pk, exc)
        computed = digest.hexdigest()
        if size != attachment.declared_size:
            verdict = Verdict("", "size_mismatch", f"Stored {size} bytes, declared {attachment.declared_size}.")
        elif attachment.declared_sha256 and computed != attachment.declared_sha256:
            verdict = Verdict("", "checksum_mismatch", f"The stored bytes hash to {computed}.")
        else:
            verdict = inspect_file(
                Path(tmp.name),
                declared_type=attachment.declared_type,
                max_pixels=settings.ATTACHMENT_MAX_IMAGE_PIXELS,
                thumbnail_size=settings.ATTACHMENT_THUMBNAIL_SIZE,
                pdf_limits=PdfLimits(
                    max_bytes=settings.ATTACHMENT_PDF_PARSE_MAX_BYTES,
                    max_objects=settings.ATTACHMENT_PDF_MAX_OBJECTS,
                    max_stream_bytes=settings.ATTACHMENT_PDF_MAX_STREAM_BYTES,
                    max_seconds=settings.ATTACHMENT_PDF_SCAN_SECONDS,
                ),
            )
    thumbnail_key = ""
    if verdict.ok and verdict.thumbnail:
        try:
            thumbnail_key = files.save_bytes(files.new_storage_key(attachment.pk, kind="thumbnails"), verdict.thumbnail)
        except files.STORAGE_ERRORS as exc:
            _storage_failed(attachment.pk, exc)
    return _decide(attachment.pk, verdict, computed=computed, thumbnail_key=thumbnail_key)


def _storage_failed(attachment_id: uuid.UUID, exc: BaseException) -> None:
    Attachment.objects.filter(pk=attachment_id).update(verify_until=None, verify_error=f"{exc!r}"[:500])
    raise StorageUnavailable(str(exc)) from exc


def _decide(attachment_id: uuid.UUID, verdict: Verdict, *, computed: str, thumbnail_key: str) -> str:
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().filter(pk=attachment_id).first()
        if attachment is None or attachment.state != State.UPLOADED:
            if thumbnail_key:
                transaction.on_commit(lambda: files.delete(thumbnail_key))
            return "skipped"
        old_thumbnail = attachment.thumbnail_key
        attachment.sniffed_type = verdict.sniffed_type
        attachment.computed_sha256 = computed or attachment.computed_sha256
        attachment.verified_at = timezone.now()
        attachment.verify_until = None
        attachment.verify_claim = ""
        attachment.thumbnail_key = thumbnail_key
        attachment.state = State.VERIFIED if verdict.ok else State.REJECTED
        attachment.reject_reason = verdict.reason
        attachment.reject_detail = verdict.detail[:500]
        attachment.save()
        if verdict.ok:
            _journal(
                attachment, "attachment.verified", source="system", before=State.UPLOADED, type=verdict.sniffed_type
            )
        else:
            _journal(
                attachment,
                "attachment.rejected",
                source="system",
                before=State.UPLOADED,
                reason=verdict.reason,
                detail=attachment.reject_detail,
            )
            # A record may already reference it: say so on the record's own trail too.
            for link in attachment.links.all():
                record_event(
                    verb="record.attachment_rejected",
                    source="system",
                    object_type="record",
                    object_id=link.record_id,
                    changes={"attachment": [str(attachment.pk), None], "reason": [None, verdict.reason]},
                )
        if old_thumbnail and old_thumbnail != thumbnail_key:
            transaction.on_commit(lambda: files.delete(old_thumbnail))
    return attachment.state


def request_reverification(*, attachment_id: uuid.UUID, by: User) -> bool:
    """Send a stored file through verification again (the admin's action). False when there are
    no stored bytes to verify (an upload that never completed)."""
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().filter(pk=attachment_id).first()
        if attachment is None or attachment.uploaded_at is None:
            return False
        before = attachment.state
        attachment.state = State.UPLOADED
        attachment.verify_until = None
        attachment.verify_claim = ""
        attachment.verify_attempts = 0
        attachment.verify_error = ""
        attachment.reject_reason = ""
        attachment.reject_detail = ""
        attachment.save()
        _journal(attachment, "attachment.reverify_requested", source="admin", actor=by, before=before)
        _enqueue_verification(attachment.pk)
    return True


# --- links from records -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """What `records` needs to judge a reference: the state, the uploader and the metadata."""

    id: uuid.UUID
    owner_id: int
    state: str
    reject_reason: str
    metadata: dict[str, Any]


def lock_references(attachment_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Reference]:
    """Lock the referenced rows for the caller's transaction (in id order: no deadlocks), so a
    verification cannot reject a file between the check and the record's commit."""
    rows = Attachment.objects.select_for_update().filter(pk__in=list(attachment_ids)).order_by("pk")
    return {row.pk: Reference(row.pk, row.owner_id, row.state, row.reject_reason, metadata(row)) for row in rows}


def link(*, attachment_ids: Collection[uuid.UUID], record_id: uuid.UUID, team_id: int) -> None:
    """Remember that the record references these attachments (in the record's transaction).
    Links are never removed by an edit: an older version of the record still points at the file."""
    if not attachment_ids:
        return
    known = set(
        AttachmentLink.objects.filter(record_id=record_id, attachment_id__in=list(attachment_ids)).values_list(
            "attachment_id", flat=True
        )
    )
    AttachmentLink.objects.bulk_create(
        [
            AttachmentLink(attachment_id=attachment_id, record_id=record_id, team_id=team_id)
            for attachment_id in sorted(set(attachment_ids) - known)
        ]
    )


def hold(*, review_id: uuid.UUID, attachment_ids: Collection[uuid.UUID]) -> None:
    """A review opened (in the caller's transaction, e.g. a push's batch) whose proposal references
    these attachments: keep them from the sweeper until it is decided, and for the grace period
    after. The rows that exist are locked in id order, as `lock_references` does: the sweeper
    deletes under the same lock, so it either sees this hold or deleted the file before."""
    if not attachment_ids:
        return
    ids = sorted(set(attachment_ids))
    list(Attachment.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
    AttachmentHold.objects.bulk_create([AttachmentHold(review_id=review_id, attachment_id=pk) for pk in ids])


def release(*, review_id: uuid.UUID, at: datetime) -> int:
    """The review was decided (in the caller's transaction). Its files are kept for
    ATTACHMENT_UNLINKED_GRACE from `at`: an approval that took a file up has linked it, and a
    rejected or superseded proposal's file gets the grace a fresh upload gets."""
    return AttachmentHold.objects.filter(review_id=review_id, released_at__isnull=True).update(released_at=at)


def problems_for_record(record_id: uuid.UUID) -> list[Attachment]:
    """Attachments of a record that verification rejected (the admin flags them)."""
    return list(Attachment.objects.filter(links__record_id=record_id, state=State.REJECTED))


# --- who may read ---------------------------------------------------------------------------------

TeamMembership = Callable[[User, set[int]], bool]
_team_membership: list[TeamMembership] = []


def set_team_membership_check(check: TeamMembership) -> None:
    """`records` tells us how to ask "is this user in one of these teams?" (we may not import it)."""
    _team_membership[:] = [check]


def can_read(user: User, attachment: Attachment) -> bool:
    """Staff with the view permission; the team of any record that references the file; the
    uploader while no record does."""
    if not user.is_active:
        return False
    if user.has_perm("attachments.view_attachment"):
        return True
    team_ids = set(attachment.links.values_list("team_id", flat=True))
    if not team_ids:
        return attachment.owner_id == user.pk
    return any(check(user, team_ids) for check in _team_membership)


def readable(*, attachment_id: uuid.UUID, user: User) -> Attachment:
    attachment = Attachment.objects.filter(pk=attachment_id).first()
    if attachment is None or not can_read(user, attachment):
        raise AttachmentError("attachment_not_found", "There is no such attachment.", status=404)
    return attachment


# --- the sweeper ----------------------------------------------------------------------------------


def sweep(*, now: datetime | None = None, batch: int = 500) -> dict[str, int]:
    """The periodic repair job: re-enqueue verifications whose message was lost (or whose worker
    died), drop expired partial uploads (and any bytes a dead request stored for them), delete
    files no record took up within the grace period unless a review holds them."""
    from attachments.tasks import verify_attachment

    now = now or timezone.now()
    stuck = list(
        Attachment.objects.filter(state=State.UPLOADED, uploaded_at__lt=now - settings.ATTACHMENT_ENQUEUE_GRACE)
        .filter(Q(verify_until__isnull=True) | Q(verify_until__lt=now))
        .values_list("pk", flat=True)[:batch]
    )
    for attachment_id in stuck:
        verify_attachment.delay(str(attachment_id))

    expired = 0
    for attachment_id in Attachment.objects.filter(state=State.UPLOADING, expires_at__lt=now).values_list(
        "pk", flat=True
    )[:batch]:
        with transaction.atomic():
            attachment = Attachment.objects.select_for_update().filter(pk=attachment_id).first()
            if attachment is None or not _expired(attachment, now):
                continue
            if attachment.patch_until is not None and attachment.patch_until > now:
                continue
            # The key as well: a simple PUT (or a tus upload's last PATCH) that died between
            # storing the bytes and marking the row uploaded left its object under it.
            _delete_row(attachment, [attachment.storage_key])
            expired += 1

    deleted = 0
    cutoff = now - settings.ATTACHMENT_UNLINKED_GRACE
    unlinked = (
        Attachment.objects.filter(
            state__in=[State.UPLOADED, State.VERIFIED, State.REJECTED], created_at__lt=cutoff, links__isnull=True
        )
        .exclude(Exists(_holding(cutoff).filter(attachment_id=OuterRef("pk"))))
        .values_list("pk", flat=True)
    )
    for attachment_id in list(unlinked[:batch]):
        with transaction.atomic():
            attachment = Attachment.objects.select_for_update().filter(pk=attachment_id).first()
            # Re-checked under the lock: a push may have linked it (or opened a review that
            # holds it: `hold` takes the same lock) since the query above.
            if attachment is None or attachment.links.exists():
                continue
            if _holding(cutoff).filter(attachment_id=attachment.pk).exists():
                continue
            keys = [attachment.storage_key, attachment.thumbnail_key] if attachment.uploaded_at else []
            _journal(attachment, "attachment.deleted", source="system", reason="never_linked")
            _delete_row(attachment, keys)
            deleted += 1

    # Holds released longer than the grace ago protect nothing any more.
    spent = list(AttachmentHold.objects.filter(released_at__lt=cutoff).values_list("pk", flat=True)[:batch])
    AttachmentHold.objects.filter(pk__in=spent).delete()
    return {"requeued": len(stuck), "expired": expired, "deleted": deleted, "holds_dropped": len(spent)}


def _holding(cutoff: datetime) -> QuerySet[AttachmentHold]:
    """Holds that keep their file: the review is pending, or was decided after `cutoff`."""
    return AttachmentHold.objects.filter(Q(released_at__isnull=True) | Q(released_at__gte=cutoff))
