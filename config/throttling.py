"""Rate limits, counted in the cache (Redis in production, so every app server shares the counts).

- `DeviceRateThrottle`: every device-token request, per device, a fixed window
  (`API_DEVICE_RATE`, generous: it bounds a runaway client or a stolen token, not normal sync).
- `LoginThrottle`: failed password checks (admin login and device registration), per client
  address and username, and per client address alone; past the limit the password is not even
  checked until the window ends.

A fixed window costs one INCR per request; DRF's sliding-window throttle keeps a list of every
request's time per key, which at thousands of requests a minute is a large value read and
written on every request.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _clock() -> float:
    return time.time()


def parse_rate(rate: str) -> tuple[int, int]:
    """`"600/min"` -> (600, 60): DRF's rate spelling (the period's first letter counts)."""
    count, _, period = rate.partition("/")
    try:
        return int(count), _PERIODS[period.strip()[:1].lower()]
    except (ValueError, KeyError):
        raise ValueError(f"not a rate like 600/min: {rate!r}") from None


def _key(*parts: str) -> str:
    # Usernames are arbitrary text; a digest keeps the cache key short and printable.
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{settings.THROTTLE_KEY_PREFIX}:{digest}"


@dataclass(frozen=True)
class Window:
    count: int
    retry_after: int  # seconds until the window ends


def _hit(key: str, period: int, *, now: float) -> Window:
    """Count one event in the current fixed window of `period` seconds."""
    start = int(now // period) * period
    window_key = f"{key}:{start}"
    # add() only sets a missing key; incr() is atomic on Redis. The key may expire between the
    # two (a window ending): then this event starts the next window's count.
    cache.add(window_key, 0, timeout=period + 1)
    try:
        count = cache.incr(window_key)
    except ValueError:
        cache.set(window_key, 1, timeout=period + 1)
        count = 1
    return Window(count=int(count), retry_after=max(1, math.ceil(start + period - now)))


def _peek(key: str, period: int, *, now: float) -> Window:
    start = int(now // period) * period
    return Window(count=int(cache.get(f"{key}:{start}", 0)), retry_after=max(1, math.ceil(start + period - now)))


def client_address(request: HttpRequest | Request) -> str:
    """REMOTE_ADDR, or with NUM_PROXIES set the address the last trusted proxy saw (DRF's rule)."""
    return str(BaseThrottle().get_ident(request) or "")  # type: ignore[arg-type]  # reads .headers and .META only


class DeviceRateThrottle(BaseThrottle):
    """Requests per device (request.auth is the sync Device); other callers are not counted here."""

    def __init__(self) -> None:
        self._retry_after: int | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        device_id = getattr(request.auth, "pk", None)
        if device_id is None or not settings.API_DEVICE_RATE:
            return True
        limit, period = parse_rate(settings.API_DEVICE_RATE)
        window = _hit(_key("device", str(device_id)), period, now=_clock())
        if window.count <= limit:
            return True
        self._retry_after = window.retry_after
        return False

    def wait(self) -> float | None:
        return self._retry_after


class LoginThrottle:
    """Failed password checks per (client address, username) and per client address."""

    def __init__(self, request: HttpRequest | Request, username: str) -> None:
        address = client_address(request)
        self.period = settings.LOGIN_FAILURE_WINDOW
        self.keys = [
            (_key("login", address, username.casefold()), settings.LOGIN_FAILURES_PER_USERNAME),
            (_key("login-address", address), settings.LOGIN_FAILURES_PER_ADDRESS),
        ]

    def blocked_for(self) -> int | None:
        """Seconds until a password may be tried again, or None when it may be tried now."""
        now = _clock()
        waits = [
            window.retry_after
            for key, limit in self.keys
            if (window := _peek(key, self.period, now=now)).count >= limit
        ]
        return max(waits) if waits else None

    def failed(self) -> None:
        now = _clock()
        for key, _ in self.keys:
            _hit(key, self.period, now=now)
