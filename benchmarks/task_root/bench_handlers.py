"""The functions the benchmarks run: no-ops, so the runtime is all there is.

This folder stands in for ``LAMBDA_TASK_ROOT``; every contender imports
``bench_handlers`` from it the way Lambda would.
"""

from __future__ import annotations

from typing import Any


def noop(event: Any, context: Any) -> None:
    return None


async def anoop(event: Any, context: Any) -> None:
    return None
