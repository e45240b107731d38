"""Every benchmark, in one table.

A benchmark is a module in this package with one coroutine,
``async def run(bench: Bench) -> Section``.  It gets the shared Runtime API
server, the CPU placements and the ``--quick`` flag; it returns its tables,
its checks against DESIGN.md's performance bar, its figures for the JSON and a
function that draws its plot.  To add one, write the module and give its entry
below a ``module``; ``python -m benchmarks --only NAME`` then runs it.

Entries without a module are figures the design asks for that nobody has
built yet; they are listed by ``--list`` and skipped, with a note, if asked for.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .contenders import Placement
from .figures import Section
from .minimal_server import RuntimeApiServer


@dataclass(frozen=True)
class Bench:
    """What every benchmark gets from the run."""

    server: RuntimeApiServer
    placements: tuple[Placement, ...]
    quick: bool = False

    def progress(self, message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)


Run = Callable[[Bench], Awaitable[Section]]


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    module: str | None = None  # None: planned, not built yet

    @property
    def built(self) -> bool:
        return self.module is not None

    def load(self) -> Run:
        if self.module is None:
            raise LookupError(f"benchmark {self.name!r} is not built yet")
        run: Run = importlib.import_module(self.module).run
        return run


BENCHMARKS: tuple[Entry, ...] = (
    Entry(
        "overhead",
        "per warm invocation, no-op handler: statefulrt vs awslambdaric vs a "
        "bare socket loop",
        "benchmarks.overhead",
    ),
    Entry(
        "cold",
        "process start to first `next` and to first response",
        "benchmarks.cold_start",
    ),
    Entry(
        "memory",
        "resident memory idle and after 100,000 warm invocations",
        "benchmarks.memory",
    ),
    Entry(
        "transport",
        "statefulrt's HTTP clients side by side (protocol, serial, streams, aiohttp)",
        "benchmarks.transport",
    ),
    Entry(
        "timelapse",
        "cost per frame as the video grows (frame 1,000 <= 1.1 x frame 10) and "
        "vs a stateless re-encode at 300 frames (>= 20 x cheaper)",
        "benchmarks.timelapse",
    ),
    # The design's other figures; each becomes a module like the ones above.
    Entry(
        "postgres",
        "warm invoke with a real PostgreSQL pool vs cold (warm <= 1/10 of cold)",
        "benchmarks.postgres",
    ),
    Entry(
        "managed",
        "Managed Instances, 16 slots, I/O-bound handler: throughput >= and "
        "memory <= 1/8 of awslambdaric's 16 processes",
        "benchmarks.managed",
    ),
    Entry(
        "emulator",
        "the built-in emulator's own capacity (invocations per second)",
        "benchmarks.emulator_capacity",
    ),
)


def find(name: str) -> Entry:
    for entry in BENCHMARKS:
        if entry.name == name:
            return entry
    names = ", ".join(entry.name for entry in BENCHMARKS)
    raise LookupError(f"no benchmark named {name!r}; choose from {names}")
