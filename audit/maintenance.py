"""The sanctioned way past the journal's append-only triggers (MariaDB only).

The triggers on `audit_auditevent` refuse every UPDATE and DELETE unless the session variable
`@fieldsync_audit_maintenance` is 1. Two things set it, each around its own statements only:
`manage.py flush` (which the test runner uses to empty tables between transactional tests) and
the retention purge (`audit.services.purge_events`). The variable is per connection: another
session, or this one after the block, is refused again.

It is a guard against mistakes (an ORM bulk update, a hand-written fix-up in a SQL console), not
against someone with SQL access who means harm: they can set the variable, or drop the trigger.
The hash chain and `manage.py audit_verify` are what catch that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections

MAINTENANCE_VARIABLE = "@fieldsync_audit_maintenance"

# Created by migration 0004 (which keeps its own copy of the SQL).
TRIGGERS = {"audit_event_no_update": "UPDATE", "audit_event_no_delete": "DELETE"}


@contextmanager
def maintenance(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Let this connection update and delete journal rows inside the block."""
    connection = connections[using]
    if connection.vendor != "mysql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SET {MAINTENANCE_VARIABLE} = 1")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"SET {MAINTENANCE_VARIABLE} = NULL")
