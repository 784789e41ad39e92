"""The attachments list for officers and managers: read-only, with a thumbnail preview and a
re-verify action that goes through `services.request_reverification` like everything else."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from attachments import files, services
from attachments.models import Attachment, State

_FIELDS: tuple[str, ...] = (
    "id",
    "preview",
    "filename",
    "state",
    "reject_reason",
    "reject_detail",
    "owner",
    "device_id",
    "declared_type",
    "sniffed_type",
    "declared_size",
    "received",
    "declared_sha256",
    "computed_sha256",
    "records",
    "created_at",
    "uploaded_at",
    "verified_at",
    "expires_at",
    "verify_attempts",
    "verify_error",
    "storage_key",
)


def previews(*, record_id: uuid.UUID) -> str:
    """The files a record references, for its admin page: thumbnail, name, state; a rejected file
    is flagged with its reason (verification may reject a file after the record took it up)."""
    return _render(Attachment.objects.filter(links__record_id=record_id).order_by("created_at"))


def previews_of(attachment_ids: set[uuid.UUID]) -> str:
    """The same, for ids a review proposes (not linked to the record yet)."""
    return _render(Attachment.objects.filter(pk__in=attachment_ids).order_by("created_at"))


def _render(attachments: QuerySet[Attachment]) -> str:
    items = []
    for attachment in attachments:
        change = reverse("admin:attachments_attachment_change", args=[attachment.pk])
        thumb = (
            format_html(
                '<img src="{}" alt="" style="max-width:120px;max-height:120px;display:block">',
                reverse("admin:attachments_attachment_thumbnail", args=[attachment.pk]),
            )
            if attachment.thumbnail_key
            else ""
        )
        if attachment.state == State.REJECTED:
            status = format_html(
                '<strong class="errornote" style="color:#ba2121">REJECTED: {}</strong>', attachment.reject_reason
            )
        else:
            status = format_html("{}", attachment.state)
        items.append(
            format_html(
                '<div style="display:inline-block;margin:0 12px 12px 0;vertical-align:top">'
                '{}<a href="{}">{}</a><br>{} · {}</div>',
                thumb,
                change,
                attachment.filename,
                attachment.content_type,
                status,
            )
        )
    return format_html_join("", "{}", ((item,) for item in items)) or "—"


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ["filename", "state", "kind", "size_display", "owner", "record_count", "created_at"]
    list_filter = ["state", "sniffed_type", "reject_reason"]
    list_select_related = ["owner"]
    search_fields = ["=id", "filename", "owner__username"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    actions = ["reverify"]
    fields = _FIELDS
    readonly_fields = _FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Attachment]:
        return super().get_queryset(request).annotate(record_total=Count("links"))

    @admin.display(description="type", ordering="sniffed_type")
    def kind(self, obj: Attachment) -> str:
        return obj.content_type

    @admin.display(description="size", ordering="declared_size")
    def size_display(self, obj: Attachment) -> str:
        return str(filesizeformat(obj.declared_size))

    @admin.display(description="records", ordering="record_total")
    def record_count(self, obj: Attachment) -> int:
        return int(getattr(obj, "record_total", 0))

    @admin.display(description="records")
    def records(self, obj: Attachment) -> str:
        return (
            format_html_join(
                ", ",
                '<a href="{}">{}</a>',
                (
                    (reverse("admin:records_record_change", args=[link.record_id]), link.record_id)
                    for link in obj.links.all()
                ),
            )
            or "—"
        )

    @admin.display(description="preview")
    def preview(self, obj: Attachment) -> str:
        if not obj.thumbnail_key:
            return "—"
        url = reverse("admin:attachments_attachment_thumbnail", args=[obj.pk])
        return format_html('<img src="{}" alt="" style="max-width:320px;max-height:320px">', url)

    def get_urls(self) -> list[URLPattern]:
        thumbnail = path(
            "<uuid:attachment_id>/thumbnail/",
            self.admin_site.admin_view(self.thumbnail_view),
            name="attachments_attachment_thumbnail",
        )
        return [thumbnail, *super().get_urls()]

    def thumbnail_view(self, request: HttpRequest, attachment_id: uuid.UUID) -> HttpResponseBase:
        attachment = Attachment.objects.filter(pk=attachment_id).first()
        if attachment is None or not attachment.thumbnail_key or not self.has_view_permission(request, attachment):
            raise Http404
        url = files.presigned_url(
            attachment.thumbnail_key, filename="thumbnail.jpg", content_type="image/jpeg", expire=60
        )
        if url is not None:
            return HttpResponseRedirect(url)
        return FileResponse(files.storage().open(attachment.thumbnail_key, "rb"), content_type="image/jpeg")

    @admin.action(description="Verify the selected files again", permissions=["reverify"])
    def reverify(self, request: HttpRequest, queryset: QuerySet[Attachment]) -> None:
        user = request.user
        assert user.is_authenticated
        sent = sum(
            services.request_reverification(attachment_id=pk, by=user)
            for pk in queryset.exclude(state=State.UPLOADING).values_list("pk", flat=True)
        )
        self.message_user(request, f"{sent} file(s) sent to verification.", messages.SUCCESS)

    def has_reverify_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("attachments.change_attachment")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Files go when no record took them up (the sweeper) or by tus termination, journaled.
        return False
