"""Transport only: take an id, call the service. Queue state (lease, attempts, last error) lives
in the attachment row, so a lost or repeated message changes nothing but timing."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task, shared_task

from attachments import services


@shared_task(
    bind=True,
    name="attachments.tasks.verify_attachment",
    acks_late=True,
    autoretry_for=(services.StorageUnavailable,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=8,
)
def verify_attachment(self: Task[Any, Any], attachment_id: str) -> str:
    """Verify one uploaded attachment. Retried with backoff only when the storage fails; a bad
    file is an outcome (rejected), not an error. If it gives up, the sweeper tries again later."""
    return services.verify_attachment(attachment_id=uuid.UUID(attachment_id), claim=self.request.id or "")


@shared_task(name="attachments.tasks.sweep_attachments", acks_late=True)
def sweep_attachments() -> dict[str, int]:
    """Re-enqueue lost verifications, expire partial uploads, delete never-linked files."""
    return services.sweep()
