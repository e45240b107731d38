"""``python -m benchmarks [--quick] [--only NAME,...] [--list] [--out DIR]``.

Runs the benchmarks (all that are built, or those named), prints one table,
and writes figures, samples and plots under ``benchmarks/results/``.  The exit
code is 0 when every benchmark ran, missed targets included (the table marks
them); 1 when one could not run; 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import machine, report
from .contenders import RunFailed, placements, usable_cpus
from .figures import Section
from .minimal_server import RuntimeApiServer
from .registry import BENCHMARKS, Bench, Entry, find

RESULTS = Path(__file__).resolve().parent / "results"
# a smoke run must not replace the figures the README shows
QUICK_RESULTS = RESULTS / "raw" / "quick"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure statefulrt against awslambdaric, side by side.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer rounds and events (under a minute); writes to results/raw/quick",
    )
    parser.add_argument(
        "--only",
        metavar="NAME,...",
        help="run only these benchmarks (see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--out", type=Path, help="where results go")
    options = parser.parse_args(argv)

    if options.list:
        for entry in BENCHMARKS:
            state = "" if entry.built else "  (not built yet)"
            print(f"{entry.name:<10} {entry.summary}{state}")
        return 0
    try:
        entries = _chosen(options.only)
    except LookupError as exc:
        parser.error(str(exc))
    out = options.out or (QUICK_RESULTS if options.quick else RESULTS)

    started = time.monotonic()
    description = machine.describe()  # before the load this run adds
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        sections = runner.run(_run(entries, quick=options.quick))
    table = report.render(sections, description, options.quick)
    print(table)
    written = report.write(sections, description, out, quick=options.quick, table=table)
    print(
        f"\n{len(written)} files under {_shown(out)} "
        f"in {time.monotonic() - started:.0f} s",
        file=sys.stderr,
    )
    return 1 if any(section.failure for section in sections) else 0


async def _run(entries: list[Entry], *, quick: bool) -> list[Section]:
    sections: list[Section] = []
    try:
        async with RuntimeApiServer() as server:
            bench = Bench(server, placements(), quick)
            for entry in entries:
                sections.append(await _one(entry, bench))
    finally:
        os.sched_setaffinity(0, set(usable_cpus()))
    return sections


async def _one(entry: Entry, bench: Bench) -> Section:
    if not entry.built:
        return Section(entry.name, entry.summary, skipped="not built yet")
    print(f"{entry.name}: {entry.summary}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        section = await entry.load()(bench)
    except RunFailed as exc:
        return Section(entry.name, entry.summary, failure=str(exc))
    bench.progress(f"{entry.name} took {time.monotonic() - started:.0f} s")
    return section


def _chosen(only: str | None) -> list[Entry]:
    if not only:
        return [entry for entry in BENCHMARKS if entry.built]
    return [find(name.strip()) for name in only.split(",") if name.strip()]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # the server runs on this loop: the faster it is, the less noise it adds
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
