from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from records import schemas
from records.demo import RECORD_TYPES
from records.models import RecordType, Team
from records.roles import COMPLIANCE_OFFICERS, FIELD_WORKERS, MANAGERS

DEMO_PASSWORD = "fieldsync-demo"

TEAMS = {"north": "North depot", "south": "South depot"}
# username: (role group or None for the superuser, teams, staff)
USERS: dict[str, tuple[str | None, list[str], bool]] = {
    "alice": (FIELD_WORKERS, ["north"], False),
    "bob": (FIELD_WORKERS, ["north"], False),
    "carol": (FIELD_WORKERS, ["south"], False),
    "olivia": (COMPLIANCE_OFFICERS, ["north", "south"], True),
    "mark": (MANAGERS, [], True),
    "admin": (None, [], True),
}


class Command(BaseCommand):
    help = "Create (or reset) the demo teams, users and record types. Safe to run again."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        teams = {
            slug: Team.objects.update_or_create(slug=slug, defaults={"name": name})[0] for slug, name in TEAMS.items()
        }
        User = get_user_model()
        for username, (role, team_slugs, staff) in USERS.items():
            user, _ = User.objects.get_or_create(username=username)
            user.is_staff = staff
            user.is_superuser = role is None
            user.is_active = True
            user.email = f"{username}@example.com"
            user.set_password(DEMO_PASSWORD)
            user.save()
            user.groups.set([Group.objects.get_or_create(name=role)[0]] if role else [])
            user.teams.set([teams[slug] for slug in team_slugs])
        for spec in RECORD_TYPES:
            record_type = RecordType.objects.filter(key=spec["key"]).first()
            fields = {k: spec[k] for k in ("name", "schema", "conflict_policy", "field_policies")}
            if record_type is None:
                record_type = RecordType.objects.create(key=spec["key"], **fields)
                schemas.record_version(record_type=record_type, rules={}, by=None, source="system")
            elif any(getattr(record_type, k) != v for k, v in fields.items()):
                # A reset is a new version like any change (the old one is kept for devices on it).
                record_type.schema_version = schemas.next_version(record_type)
                for k, v in fields.items():
                    setattr(record_type, k, v)
                record_type.save()
                schemas.record_version(record_type=record_type, rules={}, by=None, source="system")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready: teams {', '.join(TEAMS)}; users {', '.join(USERS)} "
                f"(password {DEMO_PASSWORD!r}); {len(RECORD_TYPES)} record types."
            )
        )
