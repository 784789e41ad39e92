"""`GET /healthz` for load balancers and process supervisors: no auth, no session, JSON.

200 when every dependency this process needs answers; 503 (with the failing one named) when
not, so a balancer takes the instance out instead of letting it serve 500s.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

# Short: a health check that hangs is worse than one that says "down".
TIMEOUT_SECONDS = 2.0


@lru_cache(maxsize=4)
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS)


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("health check: database unreachable: %s", exc)
        return f"error: {type(exc).__name__}"
    return "ok"


def check_redis(url: str) -> str:
    try:
        _redis_client(url).ping()
    except (redis.RedisError, OSError) as exc:
        logger.warning("health check: redis unreachable: %s", exc)
        return f"error: {type(exc).__name__}"
    return "ok"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": check_database()}
    if settings.REDIS_URL:
        checks["redis"] = check_redis(settings.REDIS_URL)
    healthy = all(result == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **checks},
        status=200 if healthy else 503,
        headers={"Cache-Control": "no-store"},
    )
