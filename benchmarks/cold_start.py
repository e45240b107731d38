"""Cold start: process start to the first ``next``, and to the first response.

The clock starts just before the process is spawned and stops when the server
receives the contender's first ``next`` (it is ready for work), then its first
response (one whole invocation done).  The bare loop is the floor: an
interpreter that imports ``socket`` and makes the two requests.

Every contender runs once unmeasured first, so each starts from a warm page
cache; then the contenders alternate.  The runtime gets a CPU of its own when
there are two, so the server's work does not land in its start-up.

One more, unmeasured, run of statefulrt with ``-X importtime`` lists what the
runtime imported before its first response: the design says the Runtime API
path never imports aiohttp, and the table says whether it held.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contenders import (
    Contender,
    Placement,
    awslambdaric,
    bare_loop,
    launched,
    statefulrt,
    until_idle,
)
from .figures import Check, Section, Spread, Table, median
from .registry import Bench

TITLE = "cold start"
# DESIGN.md, "Performance bar"
LIMIT_VS_AWSLAMBDARIC = 1.25
HEAVY_MODULES = ("aiohttp",)


@dataclass
class ColdRun:
    contender: str
    first_next_ms: float
    first_response_ms: float


def contenders() -> list[Contender]:
    return [
        statefulrt("statefulrt (def)", "bench_handlers.noop"),
        awslambdaric(),
        bare_loop(),
    ]


async def measure_cold(
    bench: Bench, contender: Contender, placement: Placement
) -> ColdRun:
    session = bench.server.new_session(1)
    async with launched(contender, bench.server.address, placement) as process:
        await until_idle(session, process, contender, timeout=30)
    return ColdRun(
        contender.name,
        (session.next_ns[0] - process.started_ns) / 1e6,
        (session.response_ns[0] - process.started_ns) / 1e6,
    )


async def imported_modules(bench: Bench, contender: Contender) -> list[str]:
    """Every module ``contender`` imports up to its first response."""
    session = bench.server.new_session(1)
    importtime = {"PYTHONPROFILEIMPORTTIME": "1"}
    async with launched(
        contender, bench.server.address, extra_env=importtime
    ) as process:
        await until_idle(session, process, contender, timeout=30)
        output = process.output.read_text(errors="replace")
    modules = []
    for line in output.splitlines():
        # "import time: self [us] | cumulative | imported package"
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.append(name)
    return modules


async def run(bench: Bench) -> Section:
    runs_each = 8 if bench.quick else 25
    lineup = contenders()
    placement = bench.placements[-1]

    for contender in lineup:  # page cache, .pyc files: not measured
        await measure_cold(bench, contender, placement)
    runs: list[ColdRun] = []
    for index in range(runs_each):
        order = lineup[index % len(lineup) :] + lineup[: index % len(lineup)]
        for contender in order:
            runs.append(await measure_cold(bench, contender, placement))
        bench.progress(
            f"cold run {index + 1}/{runs_each}: "
            + ", ".join(f"{r.contender} {r.first_next_ms:.0f} ms" for r in runs[-3:])
        )
    modules = await imported_modules(bench, lineup[0])

    section = Section("cold", TITLE)
    figures: dict[str, Any] = {}
    for contender in lineup:
        mine = [r for r in runs if r.contender == contender.name]
        figures[contender.name] = {
            "first_next_ms": Spread.of([r.first_next_ms for r in mine]).as_json(),
            "first_response_ms": Spread.of(
                [r.first_response_ms for r in mine]
            ).as_json(),
        }
    ours, theirs = figures["statefulrt (def)"], figures["awslambdaric"]
    next_ratio = ours["first_next_ms"]["median"] / theirs["first_next_ms"]["median"]
    response_ratio = (
        ours["first_response_ms"]["median"] / theirs["first_response_ms"]["median"]
    )

    table = Table(
        f"{TITLE} ({runs_each} alternating runs each, runtime on {placement.name}; "
        "ms from spawn)",
        ["contender", "first next", "p99", "first response", "p99", "x awslambdaric"],
    )
    for contender in lineup:
        mine = figures[contender.name]
        table.rows.append(
            [
                contender.name,
                mine["first_next_ms"]["median"],
                mine["first_next_ms"]["p99"],
                mine["first_response_ms"]["median"],
                mine["first_response_ms"]["p99"],
                mine["first_next_ms"]["median"] / theirs["first_next_ms"]["median"],
            ]
        )
    section.tables.append(table)

    heavy = sorted({m for m in modules if m.split(".")[0] in HEAVY_MODULES})
    section.checks.append(
        Check(
            "statefulrt / awslambdaric, process start to first next",
            next_ratio,
            LIMIT_VS_AWSLAMBDARIC,
            detail=f"to first response {response_ratio:.2f}x",
        )
    )
    section.checks.append(
        Check(
            "aiohttp imported on the way to the first response",
            float(len(heavy)),
            0.0,
            unit="",
            shown=", ".join(heavy) if heavy else "no",
            wanted="no",
            detail=f"{len(modules)} modules imported",
        )
    )
    section.figures = {
        "runs_each": runs_each,
        "placement": vars(placement),
        "contenders": {c.name: c.note for c in lineup},
        **figures,
        "ratio_first_next": next_ratio,
        "ratio_first_response": response_ratio,
        "modules_imported": len(modules),
        "heavy_modules_imported": heavy,
    }
    section.samples = {
        "runs": [vars(r) for r in runs],
    }
    section.plot = lambda path: plot_cold(path, runs, [c.name for c in lineup])
    return section


def plot_cold(path: Path, runs: list[ColdRun], names: list[str]) -> None:
    from .report import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, attribute, label in (
        (axes[0], "first_next_ms", "spawn to first next"),
        (axes[1], "first_response_ms", "spawn to first response"),
    ):
        data = [
            [getattr(r, attribute) for r in runs if r.contender == n] for n in names
        ]
        axis.boxplot(data, whis=(1, 99), showfliers=True)
        axis.set_xticks(range(1, len(names) + 1), names, fontsize="small")
        axis.set_title(label)
        axis.set_ylabel("milliseconds")
        axis.grid(alpha=0.3, axis="y")
        for index, values in enumerate(data, start=1):
            if values:
                axis.annotate(
                    f"{median(values):.0f}",
                    (index, median(values)),
                    xytext=(14, 0),
                    textcoords="offset points",
                    fontsize="small",
                    va="center",
                )
    figure.suptitle("cold start (whiskers p1-p99)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
