from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audit.services import purge_events

MINIMUM_DAYS = 365


class Command(BaseCommand):
    help = (
        "Delete audit events older than the retention period (AUDIT_RETENTION_DAYS, or --days), "
        "oldest first, leaving the hash chain verifiable. Safe to run again after an interruption."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None, help="Keep this many days (at least 365).")
        parser.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else settings.AUDIT_RETENTION_DAYS
        if not days:
            raise CommandError("Retention is off (AUDIT_RETENTION_DAYS=0): the journal is kept forever.")
        if days < MINIMUM_DAYS:
            raise CommandError(f"Keep at least {MINIMUM_DAYS} days of the audit journal, not {days}.")
        before = timezone.now() - timedelta(days=days)
        deleted = purge_events(before=before, batch_size=options["batch_size"])
        self.stdout.write(self.style.SUCCESS(f"purged {deleted} audit events recorded before {before:%Y-%m-%d %H:%M}"))
