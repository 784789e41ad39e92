from __future__ import annotations

from django.conf import settings
from django.db import models


class State(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    UPLOADED = "uploaded", "Uploaded, verification pending"
    VERIFIED = "verified", "Verified"
    REJECTED = "rejected", "Rejected"


class Attachment(models.Model):
    """One file, from its first byte to its verdict. Its primary key is the device's UUID.

    The row is also the tus upload: `received` is the tus offset, the partial bytes wait in the
    staging area under the id, and `patch_token`/`patch_until` is the lease a PATCH holds while
    it streams (so the chunks of one upload may reach any app process, one at a time).
    Verification claims the row with `verify_until` (a lease) and counts `verify_attempts`."""

    id = models.UUIDField(primary_key=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="attachments")
    device_id = models.UUIDField(null=True, blank=True)
    filename = models.CharField(max_length=255, help_text="Display name, sanitised; never a storage path.")
    storage_key = models.CharField(max_length=255, unique=True, editable=False)
    thumbnail_key = models.CharField(max_length=255, blank=True, editable=False)

    declared_size = models.BigIntegerField()
    declared_type = models.CharField(max_length=127, blank=True)
    declared_sha256 = models.CharField(max_length=64, blank=True)
    received = models.BigIntegerField(default=0, help_text="Bytes received so far (the tus offset).")
    sniffed_type = models.CharField(max_length=127, blank=True)
    computed_sha256 = models.CharField(max_length=64, blank=True)

    state = models.CharField(max_length=16, choices=State.choices, default=State.UPLOADING, db_index=True)
    reject_reason = models.CharField(max_length=64, blank=True)
    reject_detail = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="An unfinished upload is dropped after this.")
    uploaded_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    patch_token = models.UUIDField(null=True, blank=True, editable=False)
    patch_until = models.DateTimeField(null=True, blank=True, editable=False)
    verify_until = models.DateTimeField(null=True, blank=True, editable=False)
    verify_claim = models.CharField(max_length=64, blank=True, editable=False, help_text="Task id holding the lease.")
    verify_attempts = models.PositiveIntegerField(default=0, editable=False)
    verify_error = models.CharField(max_length=500, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "uploaded_at"], name="attachment_state_uploaded"),
            models.Index(fields=["state", "expires_at"], name="attachment_state_expires"),
        ]

    def __str__(self) -> str:
        return f"{self.filename} ({self.id})"

    @property
    def content_type(self) -> str:
        """What the file is: the sniffed type once known (never the client's claim after that)."""
        return self.sniffed_type or self.declared_type or "application/octet-stream"

    @property
    def sha256(self) -> str:
        return self.computed_sha256 or self.declared_sha256

    @property
    def size(self) -> int:
        return self.declared_size


class AttachmentLink(models.Model):
    """A record that references (or once referenced) the attachment. Ids only: `attachments` does
    not import `records`; `records` writes these rows in the transaction of the record write."""

    attachment = models.ForeignKey(Attachment, on_delete=models.CASCADE, related_name="links")
    record_id = models.UUIDField(db_index=True)
    team_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["attachment", "record_id"], name="attachment_link_unique")]

    def __str__(self) -> str:
        return f"{self.attachment_id} -> {self.record_id}"


class AttachmentHold(models.Model):
    """A review waiting for an officer whose proposal references the attachment: the sweeper
    keeps the file while the review is pending (`released_at` empty), and for
    ATTACHMENT_UNLINKED_GRACE after its decision (an approval that takes the file up links it).
    Ids only: `attachments` does not import `approvals`, and the review may name a file that is
    still being uploaded, or never will be."""

    attachment_id = models.UUIDField(db_index=True)
    review_id = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True, help_text="When the review was decided.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["review_id", "attachment_id"], name="attachment_hold_unique")]

    def __str__(self) -> str:
        return f"{self.attachment_id} held by review {self.review_id}"
