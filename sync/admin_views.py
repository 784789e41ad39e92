"""The per-record timeline: everything that happened to one record, from every side.

It lives in `sync` because it shows the action ledger, and `sync` is the one app allowed to import
every other (records, approvals, attachments, audit). The audit and records admins link here by
URL name (`admin:sync_record_timeline`), never by import.

One page, a handful of queries whatever the history's length: the ledger entries (every copy a
device sent, including replays, rejections and actions waiting for review), the journal events of
the record, of its reviews and of its attachments (with their field diffs), the reviews and the
attachments.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse

from approvals.models import Review
from attachments.models import Attachment, AttachmentLink
from audit.models import AuditEvent
from audit.services import canonical_json
from records.models import Record
from sync.models import LedgerEntry

TIMELINE_PERMISSIONS = ("records.view_record", "audit.view_auditevent", "sync.view_ledgerentry")


@dataclass(frozen=True)
class Item:
    """One line of the timeline: a device action (ledger entry) or a journal event."""

    at: datetime
    kind: str  # "action" | "event"
    entry: LedgerEntry | None = None
    event: AuditEvent | None = None
    diff: list[tuple[str, str, str]] | None = None
    review_url: str | None = None
    event_url: str | None = None

    @property
    def order(self) -> tuple[datetime, int, int]:
        # An action is received before the events it causes are recorded.
        if self.entry is not None:
            return (self.at, 0, self.entry.pk)
        assert self.event is not None
        return (self.at, 1, self.event.seq)


def _url(name: str, *args: Any) -> str | None:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _show(value: Any) -> str:
    return "" if value is None else canonical_json(value)


def _diff(changes: Any) -> list[tuple[str, str, str]]:
    if not isinstance(changes, dict):
        return []
    rows = []
    for name, pair in sorted(changes.items()):
        if isinstance(pair, list) and len(pair) == 2:
            rows.append((name, _show(pair[0]), _show(pair[1])))
        else:
            rows.append((name, "", _show(pair)))
    return rows


def record_timeline(request: HttpRequest, record_id: uuid.UUID) -> HttpResponse:
    if not request.user.has_perms(TIMELINE_PERMISSIONS):
        raise PermissionDenied
    record = Record.objects.select_related("type", "team").filter(pk=record_id).first()
    entries = list(
        LedgerEntry.objects.filter(record_id=record_id).select_related("device__user").order_by("received_at", "id")
    )
    reviews = list(
        Review.objects.filter(record_id=record_id).select_related("submitted_by", "decided_by").order_by("created_at")
    )
    attachments = list(
        Attachment.objects.filter(
            pk__in=AttachmentLink.objects.filter(record_id=record_id).values("attachment_id")
        ).order_by("created_at")
    )
    subjects = Q(object_type="record", object_id=str(record_id))
    if reviews:
        subjects |= Q(object_type="review", object_id__in=[str(r.pk) for r in reviews])
    if attachments:
        subjects |= Q(object_type="attachment", object_id__in=[str(a.pk) for a in attachments])
    events = list(AuditEvent.objects.filter(subjects).order_by("seq"))

    review_urls = {str(r.pk): _url("admin:approvals_review_change", r.pk) for r in reviews}
    items = [
        Item(
            at=entry.received_at,
            kind="action",
            entry=entry,
            review_url=review_urls.get(str(entry.result.get("review"))) if entry.result.get("review") else None,
        )
        for entry in entries
    ]
    items += [
        Item(
            at=event.recorded_at,
            kind="event",
            event=event,
            diff=_diff(event.changes),
            review_url=review_urls.get(event.object_id) if event.object_type == "review" else None,
            event_url=_url("admin:audit_auditevent_change", event.pk),
        )
        for event in events
    ]
    items.sort(key=lambda item: item.order)

    context = {
        **admin.site.each_context(request),
        "title": f"Timeline of record {record_id}",
        "record_id": record_id,
        "record": record,
        "record_url": _url("admin:records_record_change", record_id) if record else None,
        "trail_url": (_url("admin:audit_auditevent_changelist") or "") + f"?q={record_id}",
        "ledger_url": (_url("admin:sync_ledgerentry_changelist") or "") + f"?q={record_id}",
        "items": items,
        "reviews": [(review, review_urls[str(review.pk)]) for review in reviews],
        "attachments": [(a, _url("admin:attachments_attachment_change", a.pk)) for a in attachments],
        "counts": {
            "actions": len(entries),
            "replays": sum(entry.replays for entry in entries),
            "events": len(events),
        },
    }
    return TemplateResponse(request, "admin/audit/record_timeline.html", context)
