"""Attachment verification on a real Celery worker on Redis (eager mode would hide the on_commit
enqueue, the redelivery and the lost message): a worker verifies an upload; a worker killed in
the middle of a verification gets the message back and decides once; the sweeper recovers an
upload whose enqueue was lost."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from attachments import services
from attachments.models import Attachment
from attachments.tasks import sweep_attachments
from audit.models import AuditEvent
from config.celery import app as celery_app
from tests import celery_worker
from tests.attachments_support import png, put
from tests.celery_worker import Worker

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shared_media(settings, tmp_path) -> Path:
    """Storage and staging that this process and the worker process both see."""
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    settings.ATTACHMENT_STAGING_DIR = tmp_path / "staging"
    return root


@pytest.fixture
def start_worker(shared_media: Path, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a prefork worker (one child): killing the child leaves the parent to requeue the
    message (acks_late + task_reject_on_worker_lost) and fork a new child."""
    started: list[Worker] = []
    was_eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()

    def start(*, storage_delay: float = 0) -> Worker:
        worker = celery_worker.start_worker(
            log=tmp_path / f"worker-{len(started)}.log",
            pool="prefork",
            name="fieldsync-attachments",
            env={
                "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
                "MEDIA_ROOT": str(shared_media),
                "ATTACHMENT_STAGING_DIR": str(tmp_path / "staging"),
                "FIELDSYNC_TEST_STORAGE_DELAY": str(storage_delay),
            },
        )
        started.append(worker)
        return worker

    yield start
    celery_app.conf.task_always_eager = was_eager
    for worker in started:
        worker.stop()


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def state(attachment_id: str) -> str:
    return Attachment.objects.get(pk=attachment_id).state


def pool_children(worker: Worker) -> list[int]:
    path = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children")
    return [int(pid) for pid in path.read_text().split()]


def test_a_worker_verifies_an_upload_after_its_commit(start_worker, device_for) -> None:
    worker = start_worker()
    alice = device_for("alice")
    attachment_id = str(uuid.uuid4())
    assert put(alice, png(), attachment_id=attachment_id).status_code == 201
    assert wait_for(lambda: state(attachment_id) == "verified"), worker.log_tail()
    assert AuditEvent.objects.filter(verb="attachment.verified", object_id=attachment_id).count() == 1


def test_a_worker_killed_mid_verification_gets_the_message_back_and_decides_once(start_worker, device_for) -> None:
    worker = start_worker(storage_delay=3)
    alice = device_for("alice")
    attachment_id = str(uuid.uuid4())
    assert put(alice, png(), attachment_id=attachment_id).status_code == 201
    # The task claimed the row and is now reading the file (slowly): kill the process running it.
    assert wait_for(lambda: Attachment.objects.get(pk=attachment_id).verify_attempts == 1), worker.log_tail()
    [child] = pool_children(worker)
    os.kill(child, signal.SIGKILL)
    assert wait_for(lambda: state(attachment_id) != "uploaded", seconds=60), worker.log_tail()
    attachment = Attachment.objects.get(pk=attachment_id)
    assert attachment.state == "verified"
    # The same message came back (same task id: it could take over its own lease) and ran again.
    assert attachment.verify_attempts == 2
    verbs = AuditEvent.objects.filter(object_id=attachment_id).values_list("verb", flat=True)
    assert sorted(verbs) == ["attachment.uploaded", "attachment.verified"]
    assert "WorkerLostError" in worker.log.read_text(errors="replace")


def test_the_sweeper_recovers_an_upload_whose_enqueue_was_lost(start_worker, device_for, monkeypatch) -> None:
    worker = start_worker()
    alice = device_for("alice")
    attachment_id = str(uuid.uuid4())
    # A crash between the commit and the publish: the row says `uploaded`, no message exists.
    monkeypatch.setattr(services, "_enqueue_verification", lambda attachment_id: None)
    assert put(alice, png(), attachment_id=attachment_id).status_code == 201
    monkeypatch.undo()
    time.sleep(1)
    assert state(attachment_id) == "uploaded"
    Attachment.objects.filter(pk=attachment_id).update(uploaded_at=timezone.now() - timedelta(minutes=10))
    sweep_attachments.delay()  # what beat sends every few minutes
    assert wait_for(lambda: state(attachment_id) == "verified"), worker.log_tail()
