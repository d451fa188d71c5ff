"""Latency summaries: what the report shows of a list of samples.

Percentiles are nearest-rank over every sample (no interpolation, no
outlier removal), so p99 is a latency some event actually had.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """Milliseconds; every figure is None when there were no samples."""

    count: int
    p50: float | None
    p99: float | None
    mean: float | None
    max: float | None


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted *ordered* (not empty)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(seconds: Sequence[float]) -> Summary:
    """Summarise samples given in seconds, in milliseconds."""
    if not seconds:
        return Summary(count=0, p50=None, p99=None, mean=None, max=None)
    ordered = sorted(seconds)
    return Summary(
        count=len(ordered),
        p50=_ms(percentile(ordered, 0.50)),
        p99=_ms(percentile(ordered, 0.99)),
        mean=_ms(sum(ordered) / len(ordered)),
        max=_ms(ordered[-1]),
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class CpuMeter:
    """CPU used between :meth:`start` and :meth:`stop`: this process's, and the machine's.

    On a small machine where the database, the publisher and the subscribers
    share the cores, a throughput figure means little without knowing
    whether the cores were saturated, and by whom.
    """

    def __init__(self) -> None:
        self._process = 0.0
        self._busy = 0.0
        self._total = 0.0
        self._wall = 0.0

    @staticmethod
    def _machine() -> tuple[float, float]:
        import psutil

        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        total = float(sum(times))
        return total - idle, total

    def start(self) -> None:
        self._process, self._wall = time.process_time(), time.perf_counter()
        self._busy, self._total = self._machine()

    def stop(self) -> tuple[float, float]:
        """(this process's CPU in % of one core, the machine's busy CPU in % of all cores)."""
        process = time.process_time() - self._process
        wall = time.perf_counter() - self._wall
        busy, total = self._machine()
        machine = (busy - self._busy) / (total - self._total) if total > self._total else 0.0
        return round(100 * process / wall, 1), round(100 * machine, 1)
