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
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from attachments import admin as attachments_admin
from audit.admin_journal import JournalledAdmin, admin_request_id
from records import schemas
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


class RecordTypeForm(forms.ModelForm):
    """A changed schema becomes a new version (records/schemas.py). The form refuses a change that
    would leave existing records, or actions waiting for review, invalid once brought forward by
    the rules, and says which and how to fix it."""

    upgrade = forms.JSONField(
        required=False,
        label="Upgrade rules",
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text=(
            "With a schema change: how data of the current version becomes the new one, applied in this order. "
            '{"renames": {"old": "new"}, "drop": ["field"], "defaults": {"field": value}}. A default fills a '
            "field added (or made required) for records and for creates from devices still on an older version."
        ),
    )
    # The version the officer edited: a schema saved by someone else meanwhile makes this edit stale.
    based_on = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = RecordType
        fields = ["key", "name", "schema", "conflict_policy", "field_policies"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "based_on" in self.fields and not self.instance._state.adding:
            self.fields["based_on"].initial = self.instance.schema_version

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        rules = cleaned.get("upgrade") or {}
        schema = cleaned.get("schema")
        adding = self.instance._state.adding
        schema_changed = not adding and "schema" in self.changed_data
        if rules and not schema_changed:
            self.add_error("upgrade", "Upgrade rules go with a schema change; the schema is unchanged.")
            return cleaned
        if not schema_changed or not isinstance(schema, dict) or "schema" in self.errors:
            return cleaned
        stored = RecordType.objects.get(pk=self.instance.pk)
        if self._stale(stored):
            return cleaned
        problems = schemas.rules_errors(rules, previous=stored.schema, schema=schema)
        if problems:
            for problem in problems:
                self.add_error("upgrade", problem)
            return cleaned
        impact = schemas.schema_change_impact(stored, schema=schema, rules=rules)
        if not impact.ok:
            message = (
                f"{impact.total} existing record(s) or action(s) waiting for review would not match the new "
                "schema once brought forward by the upgrade rules."
            )
            if impact.missing:
                example = json.dumps({"defaults": {name: "…" for name in impact.missing}}, ensure_ascii=False)
                message += f" Give a default for {', '.join(impact.missing)}, e.g. {example}."
            self.add_error("schema", message)
            for found in impact.problems:
                self.add_error("schema", found.describe())
            if impact.total > len(impact.problems):
                self.add_error("schema", f"… and {impact.total - len(impact.problems)} more.")
            return cleaned
        # Locked from here until the save commits (the admin's change view is one transaction), not
        # during the check above: a record insert of the type waits for this row (its foreign key
        # check), and the check reads every record. A schema save at the same moment waits here,
        # then finds its edit stale.
        self._stale(RecordType.objects.select_for_update().get(pk=self.instance.pk), checked=stored)
        return cleaned

    def _stale(self, stored: RecordType, *, checked: RecordType | None = None) -> bool:
        based_on = self.cleaned_data.get("based_on")
        if checked is not None and based_on is None:
            based_on = checked.schema_version
        if based_on is None or based_on == stored.schema_version:
            return False
        self.add_error(
            "schema",
            f"The schema was changed by someone else since you opened this page (now version "
            f"{stored.schema_version}); reload the page and make your change again.",
        )
        return True


@admin.register(RecordType)
class RecordTypeAdmin(JournalledAdmin):
    form = RecordTypeForm
    list_display = ["key", "name", "schema_version", "conflict_policy", "updated_at"]
    search_fields = ["key", "name"]
    readonly_fields = ["schema_version", "updated_at", "version_history", "devices_by_version"]
    fields = [
        "key",
        "name",
        "schema",
        "upgrade",
        "based_on",
        "conflict_policy",
        "field_policies",
        "schema_version",
        "updated_at",
        "version_history",
        "devices_by_version",
    ]
    journal_object_type = "record_type"
    journal_fields = ["key", "name", "schema", "schema_version", "conflict_policy", "field_policies"]

    def journal_context(self, obj: RecordType) -> dict[str, str]:
        return {"record_type": obj.key}

    def get_fields(self, request: HttpRequest, obj: RecordType | None = None) -> Any:
        fields = list(super().get_fields(request, obj))
        if obj is None or not self.has_change_permission(request, obj):
            # Rules go with a change of an existing type's schema; a reader has nothing to post.
            fields = [name for name in fields if name not in ("upgrade", "based_on")]
        return fields

    def save_model(self, request: HttpRequest, obj: RecordType, form: forms.ModelForm, change: bool) -> None:
        # The admin runs this in the change view's transaction: the version row, the type and the
        # journal entries commit together.
        versioned = not change or "schema" in form.changed_data
        if versioned and change:
            obj.schema_version = schemas.next_version(obj)
        super().save_model(request, obj, form, change)
        if versioned:
            assert request.user.is_authenticated
            schemas.record_version(
                record_type=obj,
                rules=form.cleaned_data.get("upgrade") or {},
                by=request.user,
                request_id=admin_request_id(request),
            )

    @admin.display(description="versions")
    def version_history(self, obj: RecordType) -> str:
        if obj.pk is None:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>v{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            (
                (
                    v.version,
                    v.created_at.strftime("%Y-%m-%d %H:%M"),
                    v.created_by or "-",
                    json.dumps(v.upgrade, ensure_ascii=False) if v.upgrade else "-",
                    ", ".join(schemas.properties(v.schema)),
                )
                for v in obj.versions.select_related("created_by").order_by("-version")
            ),
        )
        return format_html(
            '<table id="schema-versions"><thead><tr><th>version</th><th>created</th><th>by</th>'
            "<th>upgrade rules from the version before</th><th>fields</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="devices")
    def devices_by_version(self, obj: RecordType) -> str:
        if obj.pk is None:
            return "-"
        uses = schemas.device_uses(obj)
        if not uses:
            return "No device has fetched or pushed this type yet."
        counts: dict[int | None, int] = {}
        for use in uses:
            counts[use.fetched_version] = counts.get(use.fetched_version, 0) + 1
        summary = ", ".join(
            f"v{version}: {n}" if version is not None else f"never fetched: {n}"
            for version, n in sorted(counts.items(), key=lambda item: -(item[0] or 0))
        )
        behind = sum(1 for use in uses if (use.fetched_version or 0) < obj.schema_version)
        rows = format_html_join(
            "",
            '<tr class="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    "behind" if (use.fetched_version or 0) < obj.schema_version else "current",
                    use.device,
                    use.username,
                    f"v{use.fetched_version}" if use.fetched_version else "-",
                    f"v{use.pushed_version}" if use.pushed_version else "-",
                    use.last_seen.strftime("%Y-%m-%d %H:%M") if use.last_seen else "-",
                )
                for use in uses
            ),
        )
        return format_html(
            '<p id="devices-summary">Devices by the version they last fetched: {} ({} behind v{})</p>'
            '<table id="devices-by-version"><thead><tr><th>device</th><th>user</th><th>fetched</th>'
            "<th>last pushed with</th><th>last seen</th></tr></thead><tbody>{}</tbody></table>",
            summary,
            behind,
            obj.schema_version,
            rows,
        )


class RecordVersionInline(admin.TabularInline):
    model = RecordVersion
    extra = 0
    can_delete = False
    fields = (
        "version",
        "op",
        "source",
        "actor",
        "device_id",
        "action_id",
        "captured_at",
        "deleted",
        "schema_version",
        "data_json",
        "dropped_json",
    )
    readonly_fields = fields
    ordering = ["-version"]

    @admin.display(description="data")
    def data_json(self, obj: RecordVersion) -> str:
        return pretty_json(obj.data)

    @admin.display(description="dropped by a schema upgrade")
    def dropped_json(self, obj: RecordVersion) -> str:
        return pretty_json(obj.dropped) if obj.dropped else "-"

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

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Record | None:
        record = super().get_object(request, object_id, from_field)
        if record is not None:
            # Shown and edited in the type's current schema version (stored ones may be older).
            schemas.bring_forward([record])
        return record

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
            before = schemas.current_data(Record.objects.select_related("type").get(pk=obj.pk))
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
            request._fieldsync_refused = True  # type: ignore[attr-defined]
        if outcome.applied:
            obj.refresh_from_db()

    # When the service refused the save, the admin must neither log it nor say it succeeded: it
    # goes back to the form, where the error message is shown.
    @staticmethod
    def _refused(request: HttpRequest) -> bool:
        return bool(getattr(request, "_fieldsync_refused", False))

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None if self._refused(request) else super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None if self._refused(request) else super().log_change(request, obj, message)

    def response_add(self, request: HttpRequest, obj: Record, post_url_continue: str | None = None) -> HttpResponse:
        if self._refused(request):
            return HttpResponseRedirect(request.get_full_path())
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: Record) -> HttpResponse:
        if self._refused(request):
            return HttpResponseRedirect(request.get_full_path())
        return super().response_change(request, obj)

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
