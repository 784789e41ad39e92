"""Shared actors and helpers. The named actors follow the demo: alice and bob (field workers,
team north), carol (field worker, team south: the outsider), olivia (officer), mark (manager)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from records.models import RecordType, Team
from sync.services import register_device
from tests.browser import browser  # noqa: F401 - the Playwright fixture, for every browser test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_mariadb = os.environ.get("DATABASE_URL", "").startswith("mysql")
    if on_mariadb:
        return
    skip = pytest.mark.skip(reason="needs MariaDB (runs in the second half of `make test`)")
    for item in items:
        if "mariadb" in item.keywords or "celery_worker" in item.keywords or "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _test_speed_and_static(settings: Any) -> None:
    # seed_demo hashes six passwords per test; at PBKDF2's production cost that is over a second.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Admin pages name static files; the production manifest storage needs `collectstatic` first.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fresh_rate_limits(settings: Any) -> None:
    # Rate-limit counters live in the cache, which outlives a test (Redis even outlives the run):
    # each test counts under its own prefix.
    settings.THROTTLE_KEY_PREFIX = f"throttle-{uuid.uuid4().hex}"


@pytest.fixture
def demo(db: None) -> None:
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115


@pytest.fixture
def user(demo: None) -> Callable[[str], User]:
    return lambda username: User.objects.get(username=username)


class DeviceClient(APIClient):
    """An API client logged in as a registered device."""

    device_id: uuid.UUID
    token: str

    def push(self, actions: list[dict[str, Any]], sent_at: str | None = None) -> Any:
        from django.utils import timezone

        body = {"sent_at": sent_at or timezone.now().isoformat(), "actions": actions}
        return self.post("/api/v1/sync/push", body, format="json")

    def pull(self, cursor: str | None = None, limit: int | None = None) -> Any:
        params: dict[str, Any] = {}
        if cursor:
            params["cursor"] = cursor
        if limit:
            params["limit"] = limit
        return self.get("/api/v1/sync/pull", params)


@pytest.fixture
def device_for(demo: None) -> Callable[[str], DeviceClient]:
    def make(username: str) -> DeviceClient:
        device, token = register_device(
            user=User.objects.get(username=username), name=f"{username}'s phone", platform="android"
        )
        client = DeviceClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        client.device_id = device.id
        client.token = token
        return client

    return make


def on_mariadb() -> bool:
    return connection.vendor == "mysql"


__all__ = ["DeviceClient", "Group", "RecordType", "Team", "on_mariadb"]


def ledger_entries(device: Any, *, age: Any, count: int) -> list[int]:
    """Ledger rows received `age` ago, written directly: only their age matters to the purge."""
    from django.utils import timezone

    from sync.models import LedgerEntry

    received_at = timezone.now() - age
    return [
        LedgerEntry.objects.create(
            device=device,
            action_id=uuid.uuid4(),
            fingerprint="0" * 64,
            op="create",
            type_key="stock_count",
            record_id=uuid.uuid4(),
            status="applied",
            captured_at=received_at,
            clock_offset_ms=0,
            received_at=received_at,
        ).pk
        for _ in range(count)
    ]


def logged_in(username: str) -> Any:
    """A Django test client with `username`'s admin session."""
    from django.test import Client

    client = Client()
    client.force_login(User.objects.get(username=username))
    return client
