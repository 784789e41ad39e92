from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


class Team(models.Model):
    """Scopes what a user's devices may see and write."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ConflictPolicy(models.TextChoices):
    LWW = "lww", "Last write wins"
    MERGE = "merge", "Field-level merge"
    REVIEW = "review", "Conflicts wait for review"
    REVIEW_ALL = "review_all", "Every device edit waits for approval"


def validate_json_schema(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("The schema must be a JSON object.")
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "(root)"
        raise ValidationError(f"Not a valid JSON Schema (draft 2020-12) at {path}: {exc.message}") from None
    if value.get("type") != "object":
        raise ValidationError('A record schema must have "type": "object".')


def validate_field_policies(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Field policies must be a JSON object of field -> policy.")
    allowed = {ConflictPolicy.LWW, ConflictPolicy.MERGE, ConflictPolicy.REVIEW}
    bad = {field: policy for field, policy in value.items() if policy not in allowed}
    if bad:
        raise ValidationError(f"Unknown field policies {bad}; use one of {sorted(allowed)}.")


class RecordType(models.Model):
    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    schema = models.JSONField(validators=[validate_json_schema])
    schema_version = models.PositiveIntegerField(default=1)
    conflict_policy = models.CharField(max_length=16, choices=ConflictPolicy.choices, default=ConflictPolicy.LWW)
    field_policies = models.JSONField(default=dict, blank=True, validators=[validate_field_policies])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        if isinstance(self.schema, dict) and isinstance(self.field_policies, dict):
            properties = self.schema.get("properties", {})
            unknown = sorted(set(self.field_policies) - set(properties))
            if unknown:
                raise ValidationError({"field_policies": f"Fields not in the schema: {', '.join(unknown)}"})

    def policy_for(self, field: str) -> str:
        return str(self.field_policies.get(field, self.conflict_policy))


class RecordTypeVersion(models.Model):
    """One version of a record type's schema, immutable once written, with the rules that bring
    data of the previous version to this one (records/schemas.py; docs/schema-versions.md).
    RecordType.schema is a copy of the current version's schema."""

    record_type = models.ForeignKey(RecordType, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    schema = models.JSONField()
    upgrade = models.JSONField(
        default=dict,
        blank=True,
        help_text='From the previous version: {"renames": {"old": "new"}, "drop": ["f"], "defaults": {"f": value}}',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["record_type", "-version"]
        constraints = [models.UniqueConstraint(fields=["record_type", "version"], name="record_type_version_unique")]

    def __str__(self) -> str:
        return f"{self.record_type_id} v{self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Devices hold data captured with every version ever served: a version that changed
        # afterwards would upgrade their pushes by rules nobody declared.
        if not self._state.adding:
            raise ValueError("A record type version is immutable; add a new version instead.")
        super().save(*args, **kwargs)


class Record(models.Model):
    """The current state of one record. Its primary key is the device-generated UUID."""

    id = models.UUIDField(primary_key=True, editable=False)
    type = models.ForeignKey(RecordType, on_delete=models.PROTECT, related_name="records")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="records")
    data = models.JSONField(default=dict)
    # db_default too: rows inserted by plain SQL (bench/) predate versioning, like the migrated ones.
    schema_version = models.PositiveIntegerField(
        default=1,
        db_default=1,
        help_text="The version of the type's schema `data` is stored in; read through the upgrade rules.",
    )
    version = models.PositiveIntegerField(default=1)
    deleted = models.BooleanField(default=False, help_text="A tombstone: deletes travel to devices as these.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_by_device = models.UUIDField(null=True, blank=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    updated_by_device = models.UUIDField(null=True, blank=True)
    captured_at = models.DateTimeField(help_text="Capture time of the last applied write, clock-corrected.")
    last_action_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    change_seq = models.BigIntegerField(
        db_index=True, help_text="Place in the change feed: the seq of the audit event of the last write."
    )

    class Meta:
        ordering = ["-change_seq"]
        indexes = [models.Index(fields=["team", "change_seq"], name="record_team_feed")]

    def __str__(self) -> str:
        return f"{self.type_id}:{self.id} v{self.version}"


class RecordVersion(models.Model):
    """The full data of every version, and what produced it."""

    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    data = models.JSONField()
    schema_version = models.PositiveIntegerField(
        default=1, db_default=1, help_text="The version of the type's schema `data` is in."
    )
    dropped = models.JSONField(
        default=dict,
        db_default=models.Value("{}"),
        blank=True,
        help_text="Fields the action carried that its schema upgrade dropped: kept here, not lost.",
    )
    deleted = models.BooleanField(default=False)
    op = models.CharField(max_length=16)
    source = models.CharField(max_length=16)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    device_id = models.UUIDField(null=True, blank=True)
    action_id = models.UUIDField(null=True, blank=True)
    captured_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["record", "-version"]
        constraints = [models.UniqueConstraint(fields=["record", "version"], name="record_version_unique")]

    def __str__(self) -> str:
        return f"{self.record_id} v{self.version}"
