"""The project's URLs plus the bench's peers (bench/peers.py), under /bench/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from bench.peers import NaiveRecordViewSet, PerActionPushView
from config.urls import handler404, handler500
from config.urls import urlpatterns as project_urls

router = SimpleRouter(trailing_slash=False)
router.register("bench/naive/records", NaiveRecordViewSet, basename="naive-record")

urlpatterns = [
    *project_urls,
    path("bench/push-per-action", PerActionPushView.as_view(), name="bench-push-per-action"),
    *router.urls,
]

__all__ = ["handler404", "handler500", "urlpatterns"]
