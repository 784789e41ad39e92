"""The Celery app. Tasks are transport only: they take ids, reload rows and call a service."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("fieldsync")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
