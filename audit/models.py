from __future__ import annotations

import uuid
from typing import Any, NoReturn

from django.conf import settings
from django.db import models


class AppendOnlyError(Exception):
    """The audit journal is append-only: its rows are never updated or deleted."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")


class Source(models.TextChoices):
    DEVICE = "device", "Device"
    ADMIN = "admin", "Admin"
    APPROVAL = "approval", "Approval"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """One applied action. `seq` is gap-free and handed out under the chain head's lock, so
    commit order equals `seq` order; the records change feed uses it as its clock."""

    seq = models.BigIntegerField(unique=True, editable=False)
    occurred_at = models.DateTimeField(help_text="When it happened: the device's capture time, clock-corrected.")
    recorded_at = models.DateTimeField(help_text="When the server applied it.")
    # No foreign key constraint and no ON DELETE action: deleting a user must not rewrite (or be
    # refused by) the journal. The username is kept beside the id, and it is what the hash covers.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    device_id = models.UUIDField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    verb = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    record_type = models.CharField(max_length=64, blank=True)
    team = models.CharField(max_length=64, blank=True)
    action_id = models.UUIDField(null=True, blank=True, db_index=True)
    request_id = models.CharField(max_length=64, blank=True)
    changes = models.JSONField(default=dict, blank=True, help_text="{field: [before, after]}")
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        # The admin lists newest first (ORDER BY seq DESC LIMIT n). Each filter gets an index that
        # ends in seq, so a filtered page is an index range read backwards, never a filesort of
        # every matching row (docs/audit.md, "Indexes").
        indexes = [
            # A day/month/year of the date hierarchy: a range read in (recorded_at, seq) order.
            models.Index(fields=["recorded_at", "seq"], name="audit_recorded_seq"),
            models.Index(fields=["object_id", "seq"], name="audit_object_seq"),
            models.Index(fields=["verb", "seq"], name="audit_verb_seq"),
            models.Index(fields=["source", "seq"], name="audit_source_seq"),
            models.Index(fields=["actor", "seq"], name="audit_actor_seq"),
            models.Index(fields=["device_id", "seq"], name="audit_device_seq"),
            models.Index(fields=["record_type", "seq"], name="audit_record_type_seq"),
            models.Index(fields=["team", "seq"], name="audit_team_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.verb} {self.object_type}:{self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit events cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")


class ChainHead(models.Model):
    """The single row (pk=1) that holds the last seq and hash; locking it serialises appends."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"chain head #{self.seq}"


GENESIS_HASH = "0" * 64


def new_request_id() -> str:
    return uuid.uuid4().hex
