from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property

from approvals.models import Review, ReviewState
from approvals.services import (
    Choice,
    Decision,
    DecisionError,
    can_decide,
    decide_review,
    live_classification,
    snapshots,
)
from attachments import admin as attachments_admin
from records import schemas
from records.models import Record
from records.services import referenced_attachments


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1", "Older than a day"), ("7", "Older than a week"), ("30", "Older than 30 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Review]) -> QuerySet[Review]:
        if self.value() in {"1", "7", "30"}:
            return queryset.filter(created_at__lt=timezone.now() - timedelta(days=int(self.value() or 0)))
        return queryset


# Every reason records.services hands out with a ReviewRequest (Review.reason has no choices).
REVIEW_REASONS = ("conflict", "deleted", "review_all", "schema_upgrade")


class ReasonFilter(admin.SimpleListFilter):
    """The reasons `records` hands out, listed as they are instead of by the SELECT DISTINCT over
    every review that a field filter runs (a full scan at a million reviews). Same parameter and
    choices as that filter had."""

    title = "reason"
    parameter_name = "reason__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(reason, reason) for reason in REVIEW_REASONS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Review]) -> QuerySet[Review]:
        return queryset.filter(reason=self.value()) if self.value() else queryset


class CappedCountPaginator(Paginator):
    """Counts at most CAP + 1 matching reviews, a range of an index that stops there, instead of
    every review ever opened: up to CAP the count and the page links are exact; past it the
    changelist says so (change_list.html) and pages go as far as the CAP-th review. Filter by
    state, type, team or age, or sort by newest, to reach the rest."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        reviews: Any = self.object_list  # the changelist's queryset
        return int(reviews[: self.CAP + 1].count())

    @property
    def capped(self) -> bool:
        return self.count > self.CAP


def _choices_from_post(request: HttpRequest, fields: list[str]) -> dict[str, Choice]:
    """`choice__<field>` is server / device / value; `value__<field>` holds JSON (or plain text)."""
    choices: dict[str, Choice] = {}
    for name in fields:
        choice = request.POST.get(f"choice__{name}")
        if choice in ("server", "device"):
            choices[name] = choice  # type: ignore[assignment]
        elif choice == "value":
            raw = request.POST.get(f"value__{name}", "")
            try:
                choices[name] = {"value": json.loads(raw)}
            except ValueError:
                choices[name] = {"value": raw}
    return choices


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    """The officers' review queue. Deciding goes through approvals.services.decide_review."""

    list_display = ["created_at", "state", "record_type", "team", "op", "reason", "submitted_by", "conflicts"]
    list_filter = ["state", "record_type", "team", AgeFilter, ReasonFilter]
    # Not joined (see get_queryset): an empty tuple, as False would make Django join every
    # foreign key in list_display.
    list_select_related = ()
    search_fields = ["=record_id", "=action_id"]
    # Total on its own, so the changelist does not append "-pk": `created_at, id` is the order of
    # the created_at index (InnoDB keeps the primary key in it), while `created_at, -id` made
    # MariaDB sort every review to show a page.
    ordering = ["created_at", "id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    actions = ["bulk_approve"]

    @admin.display(description="both changed")
    def conflicts(self, obj: Review) -> str:
        return ", ".join(obj.both_changed) or "-"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Review]:
        # Fetched with a query each for the page's rows, not joined: with the tiny type and team
        # tables joined, MariaDB reads them first through a join buffer, which loses the queue's
        # order and sorts every review ever opened to show one page.
        return super().get_queryset(request).prefetch_related("record_type", "team", "submitted_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("approvals.decide_review")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not request.user.has_perm("approvals.decide_review"):
            actions.pop("bulk_approve", None)
        return actions

    @admin.action(description="Approve the selected reviews that have no field changed on both sides")
    def bulk_approve(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        assert request.user.is_authenticated
        done, skipped = 0, []
        for review in queryset.filter(state=ReviewState.PENDING):
            if review.both_changed:
                skipped.append(f"{review.record_id}: fields changed on both sides")
                continue
            try:
                # Bound to the version the review opened on: a record that moved since is stale
                # and must be looked at, not approved in bulk.
                decide_review(
                    review_id=review.id, officer=request.user, decision="approve", seen_version=review.server_version
                )
                done += 1
            except DecisionError as exc:
                skipped.append(f"{review.record_id}: {exc.message}")
        self.message_user(request, f"Approved {done} review(s).", level=messages.SUCCESS)
        if skipped:
            self.message_user(request, "Skipped: " + "; ".join(skipped), level=messages.WARNING)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        review = get_object_or_404(Review.objects.select_related("record_type", "team", "submitted_by"), pk=object_id)
        if not self.has_view_or_change_permission(request, review):
            return HttpResponseRedirect(reverse("admin:index"))
        record = Record.objects.select_related("type").filter(pk=review.record_id).first()
        # Shown in the type's current schema version, as the decision will apply it.
        current = schemas.current_data(record) if record is not None else {}
        base, proposed = snapshots(review)
        classification = live_classification(review, current)
        decidable = review.state == ReviewState.PENDING and can_decide(review, request.user)  # type: ignore[arg-type]

        if request.method == "POST" and decidable:
            decision: Decision = "reject" if "_reject" in request.POST else "approve"
            seen = request.POST.get("seen_version", "")
            try:
                decide_review(
                    review_id=review.id,
                    officer=request.user,  # type: ignore[arg-type]
                    decision=decision,
                    seen_version=int(seen) if seen.isdigit() else None,
                    choices=_choices_from_post(request, list(classification)),
                    note=request.POST.get("note", ""),
                )
            except DecisionError as exc:
                self.message_user(request, exc.message, level=messages.ERROR)
                return HttpResponseRedirect(request.path)
            self.message_user(request, "Decision recorded.", level=messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:approvals_review_changelist"))

        rows = []
        for name, how in classification.items():
            rows.append(
                {
                    "name": name,
                    "how": how,
                    "base": _show(base.get(name)),
                    "server": _show(current.get(name)),
                    "device": _show(proposed.get(name)) if name in proposed else "",
                    "proposed": name in proposed,
                    "default": "device"
                    if how == "device_only"
                    else ("" if how in ("both_changed", "needs_value") else "server"),
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Review of {review.op} on {review.record_type.key} {review.record_id}",
            "review": review,
            "record": record,
            "rows": rows,
            "stale": record is not None
            and review.server_version is not None
            and record.version != review.server_version,
            "decidable": decidable,
            "own_edit": review.submitted_by_id == request.user.pk,
            "seen_version": record.version if record is not None else "",
            "attachments": attachments_admin.previews_of(
                referenced_attachments(review.record_type, {**current, **proposed})
            ),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/approvals/review/decide.html", context)


def _show(value: Any) -> str:
    # JSON, as the "enter a value" box expects it (true, not Python's True); text as it is.
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)
