from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Device(models.Model):
    """A registered field device. Its token is shown once and stored as a sha256 hash."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="devices")
    name = models.CharField(max_length=200)
    platform = models.CharField(max_length=64, blank=True)
    token_hash = models.CharField(max_length=64, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class Outcome(models.TextChoices):
    PROCESSING = "processing", "Processing"
    APPLIED = "applied", "Applied"
    MERGED = "merged", "Merged"
    PENDING_REVIEW = "pending_review", "Pending review"
    REJECTED = "rejected", "Rejected"


class LedgerEntry(models.Model):
    """The idempotency ledger: one row per (device, action id), written in the same transaction
    as the change the action caused, holding the result a retry gets back."""

    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="ledger")
    action_id = models.UUIDField()
    fingerprint = models.CharField(max_length=64, help_text="sha256 of the action's canonical JSON.")
    op = models.CharField(max_length=16)
    type_key = models.CharField(max_length=64)
    record_id = models.UUIDField(db_index=True)
    status = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PROCESSING)
    error_code = models.CharField(max_length=64, blank=True)
    result = models.JSONField(default=dict)
    captured_at = models.DateTimeField(help_text="Capture time as the device's clock said.")
    clock_offset_ms = models.BigIntegerField(help_text="Server receive time minus the device's sent_at.")
    received_at = models.DateTimeField(db_index=True)
    # Retries of the same action (same id, same payload) get the stored result; the count is kept
    # so the record's timeline can show every copy a device sent.
    replays = models.PositiveIntegerField(default=0)
    last_replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "ledger entry"
        verbose_name_plural = "action ledger"
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["device", "action_id"], name="ledger_device_action_unique")]
        # Covers the admin dashboard's actions-by-outcome chart (a range of days, grouped by status).
        indexes = [models.Index(fields=["received_at", "status"], name="ledger_received_status")]

    def __str__(self) -> str:
        return f"{self.action_id} {self.op} {self.status}"


class DeviceRecordType(models.Model):
    """The version of a record type's schema a device last fetched (GET /record-types) and last
    pushed an action with. The pull tells a device whose fetched versions are behind to refresh
    its record types; the record type's admin page lists devices by version."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="record_types")
    record_type = models.ForeignKey("records.RecordType", on_delete=models.CASCADE, related_name="+")
    fetched_version = models.PositiveIntegerField(null=True, blank=True)
    pushed_version = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["device", "record_type"], name="device_record_type_unique")]

    def __str__(self) -> str:
        return f"{self.device_id} {self.record_type_id} fetched v{self.fetched_version}"
