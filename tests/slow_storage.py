"""A filesystem storage that waits before every read, so a test can kill a Celery worker while it
is in the middle of verifying a file. Used only by the worker that tests/test_attachments_worker.py
starts (through tests/worker_settings.py)."""

from __future__ import annotations

import os
import time
from typing import Any

from django.core.files.storage import FileSystemStorage


class SlowFileSystemStorage(FileSystemStorage):
    def _open(self, name: str, mode: str = "rb") -> Any:
        time.sleep(float(os.environ.get("FIELDSYNC_TEST_STORAGE_DELAY", "0")))
        return super()._open(name, mode)
