from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.services import BrokenLink, verify_chain


class Command(BaseCommand):
    help = "Walk the audit hash chain from the first event and name the first broken link."

    def handle(self, *args: Any, **options: Any) -> None:
        checked = 0
        for item in verify_chain():
            if isinstance(item, BrokenLink):
                raise CommandError(
                    f"audit chain broken at event #{item.seq}: {item.reason} ({checked} events verified before it)"
                )
            checked += 1
        self.stdout.write(self.style.SUCCESS(f"audit chain ok: {checked} events verified"))
