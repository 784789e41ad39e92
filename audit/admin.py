"""The managers' audit trail: a read-only changelist that stays fast at millions of events.

Every page is an index range read: ORDER BY seq DESC LIMIT n, one (filter, seq) index per filter
(audit.models), no COUNT(*) (`NoCountPaginator`), a date hierarchy that reads only MIN/MAX of an
indexed column (`audit_date_hierarchy`), and no per-row queries. The CSV export streams the same
filtered view in seq ranges. docs/audit.md has the query plans.

`audit` imports no app of ours: the per-record timeline (which shows the sync ledger) lives in
sync/admin_views.py and is linked here by URL name only.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import InvalidPage, Page, Paginator
from django.db.models import Max, Min, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, StreamingHttpResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from audit.models import AuditEvent
from audit.services import canonical_json


class NoCountPaginator(Paginator):
    """LIMIT/OFFSET pages that never count the table: the page's query fetches one row more than
    a page, which says whether there is a next one. `count` is then "rows up to the end of this
    page, plus one if there are more", so the changelist can offer the next page, never a total."""

    def __init__(self, object_list: Any, per_page: int, *, page_number: int = 1, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.page_number = max(page_number, 1)

    @cached_property
    def _rows(self) -> list[Any]:
        start = (self.page_number - 1) * self.per_page
        return list(self.object_list[start : start + self.per_page + 1])

    @cached_property
    def count(self) -> int:
        return (self.page_number - 1) * self.per_page + len(self._rows)

    @property
    def has_more(self) -> bool:
        return len(self._rows) > self.per_page

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        if number == self.page_number:
            return Page(self._rows[: self.per_page], number, self)
        return super().page(number)


class AuditChangeList(ChangeList):
    """Takes the page from the paginator's one query. Django's own `get_results` re-runs the
    whole filtered queryset when everything fits on one page (it cannot know that without a
    count), and offers "show all"."""

    def get_results(self, request: HttpRequest) -> None:
        paginator = self.model_admin.get_paginator(request, self.queryset, self.list_per_page)
        try:
            page = paginator.page(self.page_num)
        except InvalidPage:
            raise IncorrectLookupParameters from None
        self.paginator = paginator
        self.result_count = paginator.count
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = False
        self.result_list = page.object_list
        self.can_show_all = False
        self.multi_page = self.page_num > 1 or getattr(paginator, "has_more", False)


def _page_number(request: HttpRequest) -> int:
    try:
        return int(request.GET.get("p", 1))
    except ValueError:
        return 1


class DeviceFilter(admin.ListFilter):
    """Filter by device id, typed or followed from a link (`?device_id=`). A list of choices would
    need either the sync app (which audit does not import) or a DISTINCT over the whole journal."""

    title = "device"
    parameter_name = "device_id"
    template = "admin/audit/input_filter.html"

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        value = params.pop(self.parameter_name, None)
        if isinstance(value, list):
            value = value[-1] if value else None
        self.value = (value or "").strip()
        if self.value:
            self.used_parameters[self.parameter_name] = self.value

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return [self.parameter_name]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        if not self.value:
            return queryset
        try:
            return queryset.filter(device_id=uuid.UUID(self.value))
        except ValueError:
            raise IncorrectLookupParameters(f"not a device id: {self.value!r}") from None

    def choices(self, changelist: Any) -> Iterator[Any]:
        # One "choice": the form (the other filters, the search and the ordering ride along as
        # hidden fields) and the link that clears this filter.
        yield {
            "value": self.value,
            "param": self.parameter_name,
            "clear": changelist.get_query_string(remove=[self.parameter_name]),
            "hidden": [
                (key, value)
                for key, values in changelist.filter_params.items()
                if key != self.parameter_name
                for value in values
            ],
        }


def timeline_url(record_id: str) -> str | None:
    """The record's timeline page (sync/admin_views.py), if that app is installed."""
    try:
        return reverse("admin:sync_record_timeline", args=[record_id])
    except NoReverseMatch:
        return None


def record_of(event: AuditEvent) -> str | None:
    """The record an event is about: its object, or the record a review event names."""
    if event.object_type == "record":
        return event.object_id
    record = event.changes.get("record") if isinstance(event.changes, dict) else None
    if isinstance(record, list) and len(record) == 2 and record[1]:
        return str(record[1])
    return None


CSV_COLUMNS = [
    "seq",
    "recorded_at",
    "occurred_at",
    "verb",
    "source",
    "actor",
    "device_id",
    "object_type",
    "object_id",
    "record_type",
    "team",
    "action_id",
    "request_id",
    "changes",
    "prev_hash",
    "hash",
]
EXPORT_CHUNK = 2000


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet would run a cell that starts like a formula (CSV injection); the journal's
    # values come from devices, so quote them out.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_row(event: AuditEvent) -> list[str]:
    return [
        _cell(value)
        for value in (
            event.seq,
            event.recorded_at.isoformat(),
            event.occurred_at.isoformat(),
            event.verb,
            event.source,
            event.actor_username,
            event.device_id,
            event.object_type,
            event.object_id,
            event.record_type,
            event.team,
            event.action_id,
            event.request_id,
            canonical_json(event.changes),
            event.prev_hash,
            event.hash,
        )
    ]


class _Echo:
    def write(self, value: str) -> str:
        return value


def export_rows(queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    """The CSV, newest first, read in seq ranges: `.iterator()` would have MySQL's driver buffer
    the whole result before the first row, and OFFSET would rescan everything before each chunk."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    # The bounds keep every chunk's read inside the filtered view, from its first chunk (no walk
    # down from the newest event) to its last (no walk past the oldest match to seq 1). Each
    # filter's (x, seq) index answers them from its ends; a date range from (recorded_at, seq).
    bounds = queryset.order_by().aggregate(low=Min("seq"), high=Max("seq"))
    if bounds["high"] is None:
        return
    queryset = queryset.filter(seq__gte=bounds["low"]).order_by("-seq")
    below = bounds["high"] + 1
    while True:
        # The chunk's seqs first, then its rows: asked for whole rows, MariaDB reads a filter's
        # (x, seq) index by x alone and skips every row above `below` again on each chunk; asked
        # for seqs only, it reads the (x, seq) range and stops.
        seqs = list(queryset.filter(seq__lt=below).values_list("seq", flat=True)[:EXPORT_CHUNK])
        if seqs:
            for event in AuditEvent.objects.filter(seq__in=seqs).order_by("-seq"):
                yield writer.writerow(csv_row(event))
        if len(seqs) < EXPORT_CHUNK:
            return
        below = seqs[-1]


DETAIL_FIELDS: list[str] = [
    "seq",
    "verb",
    "source",
    "recorded_at",
    "occurred_at",
    "actor_username",
    "device_id",
    "object_type",
    "object_id",
    "record_type",
    "team",
    "action_id",
    "request_id",
    "changes_table",
    "timeline",
    "prev_hash",
    "hash",
]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["seq", "recorded_at", "verb", "source", "actor_name", "device", "subject", "team", "changed"]
    list_display_links = ["seq"]
    list_filter = [
        "verb",
        "source",
        ("actor", admin.RelatedFieldListFilter),
        DeviceFilter,
        "record_type",
        "team",
    ]
    search_fields = ["=object_id", "=action_id"]  # see get_search_results
    search_help_text = "A record, review, device or attachment id, an action id (exact), or #seq."
    date_hierarchy = "recorded_at"
    ordering = ["-seq"]
    # Only orders an index can serve; sorting a million rows by verb is a filesort.
    sortable_by = ["seq", "recorded_at"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a COUNT per filter choice
    list_max_show_all = 0  # "show all" would load the whole journal
    list_per_page = 100
    actions = None
    paginator = NoCountPaginator
    fields = tuple(DETAIL_FIELDS)
    readonly_fields = DETAIL_FIELDS

    # --- read-only, for everyone ----------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # --- the changelist ---------------------------------------------------------------------------

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: Any,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        return NoCountPaginator(queryset, per_page, page_number=_page_number(request), orphans=orphans)

    def get_ordering(self, request: HttpRequest) -> list[str]:
        # Within a day, month or year, newest first by recorded_at: the (recorded_at, seq) index
        # then reads the range backwards and stops after a page. Ordered by seq instead, MariaDB
        # either sorts the whole range or walks back from the newest event until it reaches it.
        if any(key.startswith("recorded_at__") for key in request.GET):
            return ["-recorded_at", "-seq"]
        return ["-seq"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent], search_term: str
    ) -> tuple[QuerySet[AuditEvent], bool]:
        """Exact matches only, each on an index: an id is an object id or an action id, `#123`
        (or 123) is a seq. Anything else finds nothing rather than scanning the table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.lstrip("#").isdigit():
            return queryset.filter(seq=int(term.lstrip("#"))), False
        try:
            as_uuid = uuid.UUID(term)
        except ValueError:
            return queryset.filter(object_id=term), False
        return queryset.filter(Q(object_id=str(as_uuid)) | Q(action_id=as_uuid)), False

    @admin.display(description="actor")
    def actor_name(self, event: AuditEvent) -> str:
        # The username as journalled (the user may have been renamed or deleted since); the
        # actor foreign key is only for the filter.
        return event.actor_username or "-"

    @admin.display(description="device")
    def device(self, event: AuditEvent) -> str:
        if event.device_id is None:
            return ""
        return format_html(
            '<a href="?device_id={}" title="Only this device: {}">{}</a>',
            event.device_id,
            event.device_id,
            str(event.device_id)[:8],
        )

    @admin.display(description="object")
    def subject(self, event: AuditEvent) -> str:
        # UUIDs are shortened in the list; the event's page and the timeline show them whole.
        shown = event.object_id[:8] if len(event.object_id) == 36 else event.object_id
        label = f"{event.object_type} {shown}" + (f" ({event.record_type})" if event.record_type else "")
        record = record_of(event)
        url = timeline_url(record) if record else None
        if url is None:
            return label
        return format_html('<a href="{}" title="The record\'s timeline">{}</a>', url, label)

    @admin.display(description="changed")
    def changed(self, event: AuditEvent) -> str:
        return ", ".join(sorted(event.changes)) if isinstance(event.changes, dict) else ""

    @admin.display(description="changes")
    def changes_table(self, event: AuditEvent) -> str:
        if not event.changes:
            return "-"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td><code>{}</code></td><td><code>{}</code></td></tr>",
            (
                (name, canonical_json(pair[0]), canonical_json(pair[1]))
                if isinstance(pair, list) and len(pair) == 2
                else (name, "", canonical_json(pair))
                for name, pair in sorted(event.changes.items())
            ),
        )
        return format_html(
            '<table class="audit-diff"><thead><tr><th>field</th><th>before</th><th>after</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="record timeline")
    def timeline(self, event: AuditEvent) -> str:
        record = record_of(event)
        url = timeline_url(record) if record else None
        return format_html('<a href="{}">timeline of record {}</a>', url, record) if url else "-"

    # --- CSV export of the filtered view ----------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name="audit_auditevent_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:audit_auditevent_changelist"))
        response = StreamingHttpResponse(export_rows(changelist.queryset), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.csv"'
        return response

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        query = request.GET.copy()
        query.pop("p", None)
        export_url = reverse("admin:audit_auditevent_export") + (f"?{query.urlencode()}" if query else "")
        context = {"title": "Audit trail", "export_url": export_url, **(extra_context or {})}
        return super().changelist_view(request, context)
