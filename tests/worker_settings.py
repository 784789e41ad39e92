"""Settings for a test worker: the real ones, with reads from storage slowed down (see slow_storage)."""

from config.settings import *  # noqa: F403
from config.settings import MEDIA_ROOT, STORAGES

STORAGES = {
    **STORAGES,
    "default": {"BACKEND": "tests.slow_storage.SlowFileSystemStorage", "OPTIONS": {"location": str(MEDIA_ROOT)}},
}
