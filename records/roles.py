"""The three roles, as Django groups. The groups are made by a data migration; their permissions
are kept equal to ROLE_PERMISSIONS after every migrate (a model's permissions only exist once its
migration has run)."""

from __future__ import annotations

from typing import Any

FIELD_WORKERS = "Field workers"
COMPLIANCE_OFFICERS = "Compliance officers"
MANAGERS = "Managers"
ROLE_NAMES = (FIELD_WORKERS, COMPLIANCE_OFFICERS, MANAGERS)

# Roles that may register a device.
DEVICE_ROLES = (FIELD_WORKERS, COMPLIANCE_OFFICERS)

_VIEW_EVERYTHING = [
    "records.view_team",
    "records.view_recordtype",
    "records.view_record",
    "records.view_recordversion",
    "sync.view_device",
    "sync.view_ledgerentry",
    "audit.view_auditevent",
    "approvals.view_review",
    "attachments.view_attachment",
]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    FIELD_WORKERS: [],
    MANAGERS: _VIEW_EVERYTHING,
    COMPLIANCE_OFFICERS: [
        *_VIEW_EVERYTHING,
        "records.change_record",
        "approvals.change_review",
        "approvals.decide_review",
        # Only the re-verify action: the attachment admin is otherwise read-only.
        "attachments.change_attachment",
    ],
}


def sync_role_permissions(apps: Any = None, **kwargs: Any) -> None:
    from django.contrib.auth.models import Group, Permission

    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted: list[Permission] = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)
