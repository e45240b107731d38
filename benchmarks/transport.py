"""statefulrt's Runtime API clients, side by side.

The same runtime and the same ``async def`` no-op handler (so no thread hop
blurs the figure), with ``STATEFULRT_TRANSPORT`` choosing the HTTP client:

``protocol``  the default: parsing in an ``asyncio.Protocol``; pipelines a
              response with the next ``next`` when the runtime loop asks
``serial``    the same, never pipelining
``streams``   the same parser over asyncio streams
``aiohttp``   an aiohttp ``ClientSession``

Until ``statefulrt/_runtime.py`` passes ``then_next``, ``protocol`` and
``serial`` run the same requests; ``overhead`` measures pipelining meanwhile.

Measured exactly as ``overhead`` measures (same rounds, same alternation), plus
the spawn-to-first-``next`` time of each run, where aiohttp's import shows.
"""

from __future__ import annotations

from typing import Any

from .contenders import Contender, statefulrt
from .figures import Section, Table, median
from .overhead import Plan, alternate, plot_cdfs, round_ratios, samples, summary
from .registry import Bench

TITLE = "statefulrt transports, async def no-op handler"
DEFAULT = "protocol"
TRANSPORTS = ("protocol", "serial", "streams", "aiohttp")


def contenders() -> list[Contender]:
    return [
        statefulrt(name, "bench_handlers.anoop", transport=name) for name in TRANSPORTS
    ]


async def run(bench: Bench) -> Section:
    plan = Plan.for_bench(bench)
    lineup = contenders()
    runs = await alternate(bench, lineup, plan, "transport")

    section = Section("transport", TITLE)
    section.figures = {"plan": vars(plan), "default": DEFAULT}
    for placement in bench.placements:
        table = Table(
            f"{TITLE}, {placement.name} ({plan.rounds} rounds x "
            f"{plan.events:,} invocations; us at the server)",
            [
                "transport",
                "median us",
                "p99 us",
                "cpu us",
                f"x {DEFAULT}",
                "first next ms",
            ],
        )
        figures: dict[str, Any] = {}
        for contender in lineup:
            name = contender.name
            figures[name] = summary(runs, placement.name, name)
            figures[name]["x_default"] = median(
                round_ratios(runs, placement.name, name, DEFAULT)
            )
            table.rows.append(
                [
                    name + (" (default)" if name == DEFAULT else ""),
                    figures[name]["median"],
                    figures[name]["p99"],
                    figures[name]["cpu_us"],
                    figures[name]["x_default"],
                    figures[name]["first_next_ms"],
                ]
            )
        section.tables.append(table)
        section.figures[placement.name] = figures

        fastest = min(figures, key=lambda name: figures[name]["median"])
        if fastest != DEFAULT:
            section.notes.append(
                f"{placement.name}: {fastest} was faster than the default "
                f"{DEFAULT} ({figures[fastest]['x_default']:.2f}x)"
            )

    section.samples = samples(runs)
    section.plot = lambda path: plot_cdfs(
        path, runs, list(TRANSPORTS), bench.placements, TITLE
    )
    return section
