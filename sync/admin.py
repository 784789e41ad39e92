from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from audit.admin_journal import JournalledAdmin
from sync.admin_views import record_timeline
from sync.models import Device, LedgerEntry
from sync.services import revoke_device


@admin.register(Device)
class DeviceAdmin(JournalledAdmin):
    list_display = ["name", "user", "platform", "created", "last_seen", "revoked_at"]
    list_filter = ["platform", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user"]
    search_fields = ["name", "user__username", "=id"]
    readonly_fields = ["id", "user", "name", "platform", "created", "last_seen", "revoked_at"]
    fields = ["id", "user", "name", "platform", "created", "last_seen", "revoked_at"]
    actions = ["revoke"]
    journal_object_type = "device"
    journal_fields = ["user", "name", "platform", "revoked_at"]

    def journal_context(self, obj: Device) -> dict[str, Any]:
        return {"device_id": obj.id}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # devices register themselves through the API

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the ledger and the journal keep pointing at the device

    @admin.action(description="Revoke the selected devices' tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        assert request.user.is_authenticated
        revoked = sum(revoke_device(device=device, by=request.user) for device in queryset)
        self.message_user(request, f"Revoked {revoked} device(s).", level=messages.SUCCESS)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = [
        "action_id",
        "device",
        "op",
        "type_key",
        "record_link",
        "status",
        "error_code",
        "replays",
        "received_at",
    ]
    list_filter = ["status", "op", "type_key", "device"]
    list_select_related = ["device"]
    search_fields = ["=action_id", "=record_id"]
    show_full_result_count = False
    readonly_fields = [f.name for f in LedgerEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="record")
    def record_link(self, entry: LedgerEntry) -> str:
        url = reverse("admin:sync_record_timeline", args=[entry.record_id])
        return format_html('<a href="{}" title="The record\'s timeline">{}</a>', url, entry.record_id)

    def get_urls(self) -> list[URLPattern]:
        timeline = path(
            "record/<uuid:record_id>/timeline/",
            self.admin_site.admin_view(record_timeline),
            name="sync_record_timeline",
        )
        return [timeline, *super().get_urls()]
