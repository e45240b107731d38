"""I/O-bound functions for the Managed Instances benchmark: 20 ms of waiting.

``asleep`` awaits, so one statefulrt process serves many at once; ``sleep``
blocks, as a function for awslambdaric (one invocation per worker process)
must.  Kept apart from ``bench_handlers`` so the no-op benchmarks import
neither ``asyncio`` nor ``time`` on their way to the first ``next``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

WAIT_SECONDS = 0.02


async def asleep(event: Any, context: Any) -> None:
    await asyncio.sleep(WAIT_SECONDS)


def sleep(event: Any, context: Any) -> None:
    time.sleep(WAIT_SECONDS)
