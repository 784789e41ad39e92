"""Running calls at the same moment in real threads (MariaDB tests: each thread gets its own
database connection, closed when it ends)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections

JOIN_SECONDS = 30


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released by one barrier; each gives back its value or the
    exception it raised (surfaced by the caller's assertions, not lost in the thread)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=JOIN_SECONDS)
            results[index] = call()
        except Exception as exc:
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a call hung (lock wait?)"
    return results
