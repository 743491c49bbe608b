"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def calls_per_second(fn: Callable[[int], object], seconds: float) -> float:
    """How many times ``fn(i)`` (``i`` = 0, 1, ...) completes per second, after one untimed call."""
    fn(0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(count)
        count += 1
    return count / (time.perf_counter() - start)
