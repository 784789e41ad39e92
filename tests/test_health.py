"""GET /healthz: what a load balancer asks before sending traffic."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.test import Client


def test_healthz_says_ok_without_authentication(db: None) -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert response["Cache-Control"] == "no-store"


def test_healthz_checks_redis_exactly_when_redis_url_is_set(db: None) -> None:
    body = Client().get("/healthz").json()
    if settings.REDIS_URL:
        assert body["redis"] == "ok"
    else:
        assert "redis" not in body


def test_healthz_is_503_when_redis_is_unreachable(db: None, settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["redis"].startswith("error")
    assert body["database"] == "ok"


def test_healthz_is_503_when_the_database_is_unreachable(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(connection, "cursor", refuse)
        response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "error: OperationalError"


def test_healthz_only_answers_get(db: None) -> None:
    assert Client().post("/healthz").status_code == 405
