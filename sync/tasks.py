from __future__ import annotations

from celery import shared_task

from sync import services


@shared_task(name="sync.tasks.purge_expired_ledger_entries")
def purge_expired_ledger_entries() -> int:
    """Delete ledger rows older than SYNC_LEDGER_RETENTION_DAYS (at least 90). Safe to run twice."""
    return services.purge_expired_ledger_entries()
