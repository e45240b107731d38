"""Memory: resident set size idle after start, and over 100,000 invocations.

The server hands out no event at first, so the runtime parks in its first
``next``: that is its idle size after start.  Then it releases batches and
reads ``VmRSS`` from ``/proc`` each time the runtime is parked again, after
1,000 invocations and every tenth of the total after that.  A runtime that
keeps nothing per invocation stays flat from the first thousand on; the
check allows 1 MiB of growth over the rest (about 10 bytes an invocation).

The CPU placement does not change memory; the one-core placement is simply
the quickest way through 100,000 invocations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contenders import Contender, awslambdaric, launched, statefulrt, until_idle
from .figures import Check, Section, Table
from .registry import Bench

TITLE = "resident memory (VmRSS), no-op handler"
FIRST_POINT = 1_000
GROWTH_LIMIT_KIB = 1024


@dataclass
class MemoryRun:
    contender: str
    idle_kib: int
    points: list[tuple[int, int]] = field(default_factory=list)  # (done, kib)
    peak_kib: int = 0
    per_second: float = 0.0

    def at(self, invocations: int) -> int:
        return dict(self.points)[invocations]


def contenders() -> list[Contender]:
    return [
        statefulrt("statefulrt (def)", "bench_handlers.noop"),
        statefulrt("statefulrt (async def)", "bench_handlers.anoop"),
        awslambdaric(),
    ]


def checkpoints(total: int) -> list[int]:
    step = total // 10
    return [FIRST_POINT] + [
        step * index for index in range(1, 11) if step * index > FIRST_POINT
    ]


async def measure_memory(bench: Bench, contender: Contender, total: int) -> MemoryRun:
    server = bench.server
    session = server.new_session(0)
    async with launched(contender, server.address, bench.placements[0]) as process:
        await until_idle(session, process, contender, timeout=30)
        result = MemoryRun(contender.name, process.rss_kib())

        started = time.perf_counter()
        done = 0
        for point in checkpoints(total):
            session.release(point - done)
            await until_idle(session, process, contender, timeout=120)
            done = point
            result.points.append((done, process.rss_kib()))
        result.per_second = (total - FIRST_POINT) / (time.perf_counter() - started)
        result.peak_kib = process.peak_rss_kib()
    return result


async def run(bench: Bench) -> Section:
    total = 20_000 if bench.quick else 100_000
    lineup = contenders()
    runs: list[MemoryRun] = []
    for contender in lineup:
        result = await measure_memory(bench, contender, total)
        runs.append(result)
        bench.progress(
            f"memory {contender.name}: idle {result.idle_kib / 1024:.1f} MiB, "
            f"after {total:,} {result.at(total) / 1024:.1f} MiB "
            f"({result.per_second:,.0f} invocations/s)"
        )

    ric = next(r for r in runs if r.contender == "awslambdaric")
    section = Section("memory", TITLE)
    table = Table(
        f"{TITLE} (MiB; growth in KiB from {FIRST_POINT:,} to {total:,})",
        [
            "contender",
            "idle",
            f"after {FIRST_POINT:,}",
            f"after {total:,}",
            "growth KiB",
            "peak",
            "idle x awslambdaric",
        ],
    )
    figures: dict[str, Any] = {"total": total}
    for result in runs:
        growth = result.at(total) - result.at(FIRST_POINT)
        table.rows.append(
            [
                result.contender,
                result.idle_kib / 1024,
                result.at(FIRST_POINT) / 1024,
                result.at(total) / 1024,
                growth,
                result.peak_kib / 1024,
                result.idle_kib / ric.idle_kib,
            ]
        )
        figures[result.contender] = {
            "idle_kib": result.idle_kib,
            "points_kib": result.points,
            "peak_kib": result.peak_kib,
            "growth_kib": growth,
            "invocations_per_second": result.per_second,
        }
        if result.contender.startswith("statefulrt"):
            section.checks.append(
                Check(
                    f"{result.contender} RSS growth, {FIRST_POINT:,} to "
                    f"{total:,} invocations",
                    float(growth),
                    float(GROWTH_LIMIT_KIB),
                    unit=" KiB",
                    digits=0,
                    detail=f"idle {result.idle_kib / 1024:.1f} MiB",
                )
            )
    section.tables.append(table)
    section.figures = figures
    section.plot = lambda path: plot_memory(path, runs)
    return section


def plot_memory(path: Path, runs: list[MemoryRun]) -> None:
    from .report import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for result in runs:
        xs = [0] + [done for done, _ in result.points]
        ys = [result.idle_kib / 1024] + [kib / 1024 for _, kib in result.points]
        axis.plot(xs, ys, marker="o", markersize=3, label=result.contender)
    axis.set_xlabel("warm invocations")
    axis.set_ylabel("VmRSS, MiB")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize="small")
    axis.set_title(TITLE)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
