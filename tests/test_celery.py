"""A real Celery worker on Redis, against the test database: a task asked for inside a
transaction runs once that transaction commits, and is never even sent when it rolls back.
(Eager mode runs tasks inline and would hide both.)"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection, transaction

from config.celery import app as celery_app
from sync.models import Device, LedgerEntry
from sync.tasks import purge_expired_ledger_entries
from tests.celery_worker import Worker, start_worker
from tests.conftest import DeviceClient, ledger_entries

BASE_DIR = Path(__file__).resolve().parent.parent
PURGE = "sync.tasks.purge_expired_ledger_entries"
WAIT_SECONDS = 30

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    # Publish to Redis from this process too (the suite otherwise runs tasks eagerly), and
    # start from an empty queue so a leftover message cannot stand in for ours.
    was_eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    running = None
    try:
        log = tmp_path_factory.mktemp("celery") / "worker.log"
        running = start_worker(log=log, pool="solo", name="fieldsync-test")
        yield running
    finally:
        celery_app.conf.task_always_eager = was_eager
        if running is not None:
            running.stop()


def queued_messages() -> int:
    return int(redis.Redis.from_url(os.environ["REDIS_URL"]).llen("celery"))


def wait_until(condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_a_worker_runs_the_ledger_purge_once_the_transaction_commits(
    worker: Worker, device_for: Callable[[str], DeviceClient]
) -> None:
    device = Device.objects.get(pk=device_for("alice").device_id)
    expired = ledger_entries(device, age=timedelta(days=91), count=3)
    fresh = ledger_entries(device, age=timedelta(days=89), count=2)
    runs_before = worker.executed(PURGE)

    with transaction.atomic():
        purge_expired_ledger_entries.delay_on_commit()
        time.sleep(1)
        assert queued_messages() == 0, "sent before the transaction committed"
    assert LedgerEntry.objects.filter(pk__in=expired).count() == 3, "ran in this process, not on the worker"

    purged = wait_until(lambda: not LedgerEntry.objects.filter(pk__in=expired).exists())
    assert purged, f"the worker did not purge the expired entries; log:\n{worker.log_tail()}"
    assert sorted(LedgerEntry.objects.values_list("pk", flat=True)) == sorted(fresh)
    assert wait_until(lambda: worker.executed(PURGE) == runs_before + 1, seconds=5)


def test_nothing_is_enqueued_when_the_transaction_rolls_back(
    worker: Worker, device_for: Callable[[str], DeviceClient]
) -> None:
    device = Device.objects.get(pk=device_for("alice").device_id)
    expired = ledger_entries(device, age=timedelta(days=91), count=3)
    runs_before = worker.executed(PURGE)

    with pytest.raises(RuntimeError), transaction.atomic():
        purge_expired_ledger_entries.delay_on_commit()
        raise RuntimeError("the change that asked for the task failed")

    time.sleep(2)
    assert queued_messages() == 0
    assert worker.executed(PURGE) == runs_before
    assert LedgerEntry.objects.filter(pk__in=expired).count() == 3
    assert celery_app.control.ping(destination=[worker.hostname], timeout=2), "the worker is still up and idle"


def test_the_worker_runs_on_the_test_database_with_late_acks_and_prefetch_one(worker: Worker) -> None:
    conf: dict[str, Any] = celery_app.control.inspect(destination=[worker.hostname], timeout=5).conf() or {}
    worker_conf = conf[worker.hostname]  # the Django settings, as the worker process sees them
    assert worker_conf["DATABASES"]["default"]["NAME"] == connection.settings_dict["NAME"]
    assert worker_conf["CELERY_TASK_ALWAYS_EAGER"] is False
    assert worker_conf["CELERY_TASK_ACKS_LATE"] is True
    assert worker_conf["CELERY_WORKER_PREFETCH_MULTIPLIER"] == 1
