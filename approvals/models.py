from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from records.models import Record, RecordType, Team


class ReviewState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    RESOLVED = "resolved", "Resolved (per-field mix)"
    SUPERSEDED = "superseded", "Superseded"


class Review(models.Model):
    """A device action that waits for a compliance officer: a conflicting edit, an edit of a
    type whose every edit is reviewed, or an edit of a deleted record."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    state = models.CharField(max_length=16, choices=ReviewState.choices, default=ReviewState.PENDING)
    reason = models.CharField(max_length=16)  # review_all | conflict | deleted | schema_upgrade
    record_type = models.ForeignKey(RecordType, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="+")
    record_id = models.UUIDField(db_index=True)
    # The device action.
    op = models.CharField(max_length=16)
    action_id = models.UUIDField(null=True, blank=True)
    device_id = models.UUIDField(null=True, blank=True)
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    captured_at = models.DateTimeField()
    # Snapshots when the review opened.
    base_version = models.PositiveIntegerField(null=True, blank=True)
    base_data = models.JSONField(default=dict)
    server_version = models.PositiveIntegerField(null=True, blank=True)
    server_data = models.JSONField(default=dict)
    proposed_data = models.JSONField(default=dict)
    classification = models.JSONField(default=dict)
    # The version of the type's schema the snapshots are in: they are read in the current one
    # (records/schemas.py). db_default: bench/ inserts reviews with plain SQL.
    schema_version = models.PositiveIntegerField(default=1, db_default=1)
    # Why the action waits, beyond `reason`: for schema_upgrade, the versions and the errors.
    detail = models.JSONField(default=dict, db_default=models.Value("{}"), blank=True)
    # The decision.
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_on_version = models.PositiveIntegerField(null=True, blank=True)
    note = models.TextField(blank=True)
    resolution = models.JSONField(null=True, blank=True, help_text="Per field: server, device or a value.")
    result_version = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at"]
        permissions = [("decide_review", "Can decide reviews (compliance officer)")]
        indexes = [models.Index(fields=["state", "created_at"], name="review_queue")]

    def __str__(self) -> str:
        return f"{self.op} {self.record_type_id}:{self.record_id} ({self.state})"

    @property
    def record(self) -> Record | None:
        return Record.objects.filter(pk=self.record_id).first()

    @property
    def both_changed(self) -> list[str]:
        return [name for name, how in self.classification.items() if how == "both_changed"]
