from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html

from attachments import admin as attachments_admin
from audit.admin_journal import JournalledAdmin
from records.models import Record, RecordType, RecordVersion, Team
from records.services import Actor, Change, apply_change, schema_errors


def pretty_json(value: Any) -> str:
    return format_html(
        "<pre style='white-space:pre-wrap;margin:0'>{}</pre>",
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


@admin.register(Team)
class TeamAdmin(JournalledAdmin):
    list_display = ["slug", "name"]
    search_fields = ["slug", "name"]
    filter_horizontal = ["members"]
    journal_object_type = "team"
    journal_fields = ["slug", "name", "members"]
    journal_membership = {"members": "team.members_changed"}

    def journal_context(self, obj: Team) -> dict[str, str]:
        return {"team": obj.slug}


@admin.register(RecordType)
class RecordTypeAdmin(JournalledAdmin):
    list_display = ["key", "name", "schema_version", "conflict_policy", "updated_at"]
    search_fields = ["key", "name"]
    readonly_fields = ["updated_at"]
    journal_object_type = "record_type"
    journal_fields = ["key", "name", "schema", "schema_version", "conflict_policy", "field_policies"]

    def journal_context(self, obj: RecordType) -> dict[str, str]:
        return {"record_type": obj.key}


class RecordVersionInline(admin.TabularInline):
    model = RecordVersion
    extra = 0
    can_delete = False
    fields = ("version", "op", "source", "actor", "device_id", "action_id", "captured_at", "deleted", "data_json")
    readonly_fields = fields
    ordering = ["-version"]

    @admin.display(description="data")
    def data_json(self, obj: RecordVersion) -> str:
        return pretty_json(obj.data)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecordForm(forms.ModelForm):
    base_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Record
        fields = ["type", "team", "data"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.instance._state.adding:
            self.fields["base_version"].initial = self.instance.version
            # A view-only user's form has no editable fields at all (the admin makes them readonly).
            for name in ("type", "team"):
                if name in self.fields:
                    self.fields[name].disabled = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        record_type, data = cleaned.get("type"), cleaned.get("data")
        if isinstance(record_type, RecordType):
            if not isinstance(data, dict):
                self.add_error("data", "The data must be a JSON object.")
            else:
                for path, problems in schema_errors(record_type, data).items():
                    self.add_error("data", f"{path}: {'; '.join(problems)}")
        return cleaned


@admin.register(Record)
class RecordAdmin(admin.ModelAdmin):
    """Admin edits go through records.services.apply_change, like every other writer."""

    form = RecordForm
    list_display = ["id", "type", "team", "version", "deleted", "updated_at"]
    list_filter = ["type", "team", "deleted"]
    list_select_related = ["type", "team"]
    search_fields = ["=id"]
    show_full_result_count = False
    readonly_fields = [
        "id",
        "version",
        "deleted",
        "data_pretty",
        "attachment_previews",
        "created_by",
        "updated_by",
        "captured_at",
        "created_at",
        "updated_at",
        "change_seq",
        "timeline",
    ]
    inlines = [RecordVersionInline]

    @admin.display(description="current data")
    def data_pretty(self, obj: Record) -> str:
        return pretty_json(obj.data)

    @admin.display(description="attachments")
    def attachment_previews(self, obj: Record) -> str:
        return attachments_admin.previews(record_id=obj.pk)

    @admin.display(description="history")
    def timeline(self, obj: Record) -> str:
        # The timeline shows the sync ledger, so it lives in sync (which records never imports).
        try:
            url = reverse("admin:sync_record_timeline", args=[obj.pk])
        except NoReverseMatch:
            return "-"
        return format_html('<a href="{}" id="record-timeline-link">Timeline: every action and journal event</a>', url)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Record], search_term: str
    ) -> tuple[QuerySet[Record], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            return queryset.none(), False

    def _actor(self, request: HttpRequest) -> Actor:
        assert request.user.is_authenticated
        return Actor(user=request.user, source="admin")

    def save_model(self, request: HttpRequest, obj: Record, form: forms.ModelForm, change: bool) -> None:
        if change:
            before = Record.objects.get(pk=obj.pk).data
            changed = {k: v for k, v in obj.data.items() if before.get(k) != v}
            op_change = Change(
                op="update",
                record_id=obj.pk,
                type_key=obj.type.key,
                data=changed,
                captured_at=timezone.now(),
                base_version=form.cleaned_data.get("base_version"),
            )
        else:
            obj.id = uuid.uuid4()
            op_change = Change(
                op="create",
                record_id=obj.id,
                type_key=obj.type.key,
                data=obj.data,
                captured_at=timezone.now(),
                team_slug=obj.team.slug,
            )
        with transaction.atomic():
            outcome = apply_change(actor=self._actor(request), change=op_change)
        if outcome.error:
            self.message_user(request, f"Not saved: {outcome.error.message}", level=messages.ERROR)
        if outcome.applied:
            obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        # Versions are read-only and written by the service: save no formset, but say that none
        # changed (the admin's change message reads these lists; without them every edit was a 500).
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def delete_model(self, request: HttpRequest, obj: Record) -> None:
        self._tombstone(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Record]) -> None:
        for record in queryset.select_related("type"):
            self._tombstone(request, record)

    def _tombstone(self, request: HttpRequest, record: Record) -> None:
        with transaction.atomic():
            outcome = apply_change(
                actor=self._actor(request),
                change=Change(
                    op="delete",
                    record_id=record.pk,
                    type_key=record.type.key,
                    data={},
                    captured_at=timezone.now(),
                    base_version=record.version,
                ),
            )
        if outcome.error:
            self.message_user(request, f"{record.pk} not deleted: {outcome.error.message}", level=messages.ERROR)


# Users and roles (groups) are Django's models; their admin is Django's, journalled.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class JournalledUserAdmin(JournalledAdmin, UserAdmin):
    journal_object_type = "user"
    journal_fields = [
        "username",
        "password",
        "first_name",
        "last_name",
        "email",
        "is_active",
        "is_staff",
        "is_superuser",
        "groups",
        "user_permissions",
    ]
    journal_membership = {"groups": "user.roles_changed"}

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        # Django's password page saves the user itself (no save_model): journal around it, in
        # one transaction, by comparing the stored password before and after.
        with transaction.atomic():
            stored = User.objects.filter(pk=id).first() if id.isdigit() else None
            before = self._snapshot(stored) if stored is not None else None
            response = super().user_change_password(request, id, form_url)
            if stored is not None and before is not None:
                self._journal(request, stored, before, self._snapshot(User.objects.get(pk=stored.pk)))
        return response


@admin.register(Group)
class JournalledGroupAdmin(JournalledAdmin, GroupAdmin):
    journal_object_type = "group"
    journal_fields = ["name", "permissions"]
