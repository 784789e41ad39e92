"""The e2e Celery worker and beat: the real settings, with
- storage reads slowed down on demand (FIELDSYNC_TEST_STORAGE_DELAY), so the test can kill the
  worker in the middle of a verification;
- the broker's sweep for unacknowledged messages every second instead of every ~100 s (kombu's
  interval x throttle), so a killed worker's message comes back right after the (short)
  visibility timeout;
- the attachment sweeper every two seconds instead of every five minutes. A worker killed -9
  between Redis' BRPOP and kombu's bookkeeping of the unacknowledged message loses that message
  for good (at-most-once on that window); the sweeper is what re-enqueues such a verification."""

from datetime import timedelta

from config.settings import CELERY_BEAT_SCHEDULE, CELERY_BROKER_TRANSPORT_OPTIONS
from tests.worker_settings import *  # noqa: F403

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}

CELERY_BEAT_SCHEDULE = {
    **CELERY_BEAT_SCHEDULE,
    "sweep-attachments": {**CELERY_BEAT_SCHEDULE["sweep-attachments"], "schedule": timedelta(seconds=2)},
}
