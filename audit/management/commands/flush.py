from typing import Any

from django.core.management.commands.flush import Command as DjangoFlush

from audit.maintenance import maintenance


class Command(DjangoFlush):
    """Django's flush, allowed past the audit journal's append-only triggers.

    flush empties every table with DELETE FROM on MariaDB (and the test runner flushes between
    transactional tests), which the triggers would refuse. Emptying the whole database is a
    deliberate act, not an edit of the journal; it runs with the maintenance variable set."""

    def handle(self, **options: Any) -> None:
        with maintenance(options["database"]):
            super().handle(**options)
