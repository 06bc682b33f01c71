"""What the bench scripts measure about their own process: seconds, RSS added and peak RSS (Linux)."""

from __future__ import annotations

import os
import resource
import time
from typing import Any


def rss_now() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def finish(result: dict[str, Any], started: float, rss_before: int) -> dict[str, Any]:
    """`result` with the seconds since `started` (perf_counter) and the RSS added since `rss_before` and its peak."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result.update(seconds=time.perf_counter() - started, rss_added_mib=(peak - rss_before) / (1 << 20),
                  rss_peak_mib=peak / (1 << 20))
    return result


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
