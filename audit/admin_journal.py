"""Journalling of admin edits (record types, devices, users, teams, groups).

The admin saves these models itself, so `JournalledAdmin` hooks the narrow ModelAdmin methods
(`save_model`, `save_related`, `delete_model`, `delete_queryset`) and writes the journal entry in
the same transaction as the edit: Django runs the add/change/delete views inside
`transaction.atomic`, and the bulk delete here opens its own. No signals (DESIGN invariant 8): a
signal would also fire for writes that are not admin edits, and would not know the request's actor.

Every model that uses it names its `journal_object_type` and the fields to snapshot; a
many-to-many field listed in `journal_membership` gets its own verb (`team.members_changed`,
`user.roles_changed`), so a manager can filter the trail to membership changes.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from audit.models import Source, new_request_id
from audit.services import diff, record_event

# Values of these fields never reach the journal; only whether they changed does.
SECRET_FIELDS = {"password"}


def _label(obj: models.Model) -> str:
    if isinstance(obj, Permission):
        return f"{obj.content_type.app_label}.{obj.codename}"
    return str(obj)


def snapshot(obj: models.Model, fields: list[str]) -> dict[str, Any]:
    """The journalled state of `obj`: plain values, foreign keys by pk, many-to-many fields as the
    sorted labels of the related objects (read from the database, so call it after save_m2m)."""
    values: dict[str, Any] = {}
    for name in fields:
        field = obj._meta.get_field(name)
        if field.many_to_many:
            manager = getattr(obj, name)
            related = manager.all()
            if field.related_model is Permission:
                related = related.select_related("content_type")
            values[name] = sorted(_label(item) for item in related)
        elif field.is_relation:
            values[name] = getattr(obj, field.attname)  # type: ignore[union-attr]
        else:
            values[name] = field.value_from_object(obj)  # type: ignore[union-attr]
    return values


def _mask_secrets(changes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    masked = dict(changes)
    for name in SECRET_FIELDS & set(changes):
        before, after = changes[name]

        def state(value: Any) -> str | None:
            if value is None:
                return None
            return "(unusable)" if not value or str(value).startswith("!") else "(set)"

        shown_after = state(after)
        if shown_after == "(set)" and state(before) == "(set)":
            shown_after = "(changed)"
        masked[name] = [state(before), shown_after]
    return masked


def admin_request_id(request: HttpRequest) -> str:
    """One id per admin request, so the events of one save (a change and a membership change)
    can be told apart from the next save's."""
    existing = getattr(request, "_audit_request_id", None)
    if existing is None:
        existing = new_request_id()
        request._audit_request_id = existing  # type: ignore[attr-defined]
    return str(existing)


def journal_admin_edit(
    *,
    request: HttpRequest,
    object_type: str,
    object_id: Any,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    membership: dict[str, str] | None = None,
    context: dict[str, Any] | None = None,
) -> list[Any]:
    """Journal one admin create (before=None), change, or delete (after=None). A change of a
    membership field gets its own event with that field's verb; nothing is written when nothing
    changed. Must run inside the transaction of the edit."""
    assert request.user.is_authenticated
    membership = membership or {}
    changes = _mask_secrets(diff(before, after))
    if before is not None and after is None:
        # A delete: say what was there, not just that something went.
        changes = _mask_secrets({name: [value, None] for name, value in sorted(before.items())})
    groups: list[tuple[str, dict[str, list[Any]]]] = []
    if before is None:
        groups.append((f"{object_type}.created", changes))
    elif after is None:
        groups.append((f"{object_type}.deleted", changes))
    else:
        plain = {name: change for name, change in changes.items() if name not in membership}
        if plain:
            groups.append((f"{object_type}.changed", plain))
        for name, verb in membership.items():
            if name in changes:
                groups.append((verb, {name: changes[name]}))
    events = []
    for verb, group_changes in groups:
        if not group_changes and verb.endswith(".changed"):
            continue
        events.append(
            record_event(
                verb=verb,
                source=Source.ADMIN,
                actor=request.user,
                object_type=object_type,
                object_id=str(object_id),
                request_id=admin_request_id(request),
                changes=group_changes,
                **(context or {}),
            )
        )
    return events


class JournalledAdmin(admin.ModelAdmin):
    """A ModelAdmin whose adds, changes and deletes are journalled (source "admin")."""

    journal_object_type: str = ""
    journal_fields: list[str] = []
    # many-to-many field -> the verb of a change of it
    journal_membership: dict[str, str] = {}

    def journal_context(self, obj: Any) -> dict[str, Any]:
        """Extra columns of the event (team, record_type, device_id) so the trail's filters find it."""
        return {}

    def _snapshot(self, obj: Any) -> dict[str, Any]:
        return snapshot(obj, self.journal_fields)

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        before = None
        if change:
            stored = self.model._default_manager.filter(pk=obj.pk).first()
            before = self._snapshot(stored) if stored is not None else None
        obj._journal_before = before
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        obj = form.instance
        self._journal(request, obj, getattr(obj, "_journal_before", None), self._snapshot(obj))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        pk, before, context = obj.pk, self._snapshot(obj), self.journal_context(obj)
        super().delete_model(request, obj)
        self._journal(request, obj, before, None, object_id=pk, context=context)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        # The bulk "delete selected" action runs outside the admin's transaction; open one so
        # the rows and their journal entries go together.
        with transaction.atomic(using=queryset.db):
            doomed = [(obj.pk, self._snapshot(obj), self.journal_context(obj), obj) for obj in queryset]
            super().delete_queryset(request, queryset)
            for pk, before, context, obj in doomed:
                self._journal(request, obj, before, None, object_id=pk, context=context)

    def _journal(
        self,
        request: HttpRequest,
        obj: Any,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        *,
        object_id: Any = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        journal_admin_edit(
            request=request,
            object_type=self.journal_object_type,
            object_id=object_id if object_id is not None else obj.pk,
            before=before,
            after=after,
            membership=self.journal_membership,
            context=context if context is not None else self.journal_context(obj),
        )
