"""Exponential backoff with full jitter: the wait before attempt n is uniform in
[0, min(cap, base * 2**n)]. The jitter spreads a fleet of devices that lost signal together (a
depot's Wi-Fi coming back) over time, instead of having them all retry at the same instants."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        # Not for secrets: spreading retries only needs unpredictability between devices.
        self.rng = rng or random.Random()  # noqa: S311
        self.attempt = 0

    def next_delay(self, *, at_least: float | None = None) -> float:
        """The wait before the next attempt; `at_least` is the server's Retry-After, if any."""
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        delay = self.rng.uniform(0, ceiling)
        return max(delay, min(at_least, self.cap)) if at_least is not None else delay

    def reset(self) -> None:
        self.attempt = 0
