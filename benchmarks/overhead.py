"""Overhead per warm invocation: statefulrt vs awslambdaric vs a bare loop.

Each run starts one contender against a fresh server session, lets it handle
a warm-up batch, parks it, reads its CPU time, releases the measured batch and
parks it again.  The figure is the time between successive ``next`` requests
of the measured batch, read at the server: one whole invocation as the Runtime
API sees it (event out, response in, next request in).  The interval that
spans the park is left out.

Rounds alternate the contenders, each round starting with a different one, and
every round runs once per CPU placement.  Ratios are taken within a round
(same minutes, same machine state) and the median of those is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
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

TITLE = "overhead per warm invocation, no-op handler"
# DESIGN.md, "Performance bar"
LIMIT_VS_AWSLAMBDARIC = 0.60
LIMIT_VS_BARE = 1.15
# statefulrt's runs, each checked against the bar
OURS = (
    "statefulrt (def)",
    "statefulrt (async def)",
)


@dataclass
class WarmRun:
    """One contender's measured batch in one round and placement."""

    contender: str
    placement: str
    round: int
    intervals_us: list[float]
    cpu_us: float  # per invocation, all threads of the runtime process
    first_next_ms: float  # from just before spawn

    @property
    def spread(self) -> Spread:
        return Spread.of(self.intervals_us)


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: int
    events: int

    @classmethod
    def for_bench(cls, bench: Bench) -> Plan:
        if bench.quick:
            return cls(rounds=2, warmup=300, events=1500)
        return cls(rounds=7, warmup=500, events=3000)


def contenders() -> list[Contender]:
    return [
        bare_loop(),
        statefulrt(OURS[0], "bench_handlers.noop"),
        statefulrt(OURS[1], "bench_handlers.anoop"),
        awslambdaric(),
    ]


async def measure_warm(
    bench: Bench,
    contender: Contender,
    placement: Placement,
    plan: Plan,
    round_index: int,
) -> WarmRun:
    """Run ``contender`` through ``plan.warmup`` then ``plan.events`` events."""
    server = bench.server
    session = server.new_session(plan.warmup)
    timeout = 60 + plan.events / 500  # far above any sane runtime
    async with launched(contender, server.address, placement) as process:
        await until_idle(session, process, contender, timeout)
        cpu_before = process.cpu_ns()
        session.release(plan.events)
        await until_idle(session, process, contender, timeout)
        cpu_after = process.cpu_ns()

    # next_ns[warmup] sat parked through the release: the first whole
    # measured invocation starts at the request after it
    arrivals = session.next_ns[plan.warmup + 1 :]
    intervals = [(later - earlier) / 1000 for earlier, later in pairwise(arrivals)]
    return WarmRun(
        contender=contender.name,
        placement=placement.name,
        round=round_index,
        intervals_us=intervals,
        cpu_us=(cpu_after - cpu_before) / plan.events / 1000,
        first_next_ms=(session.next_ns[0] - process.started_ns) / 1e6,
    )


async def alternate(
    bench: Bench, lineup: list[Contender], plan: Plan, label: str
) -> list[WarmRun]:
    """Every contender once per round and placement, rotating who goes first."""
    runs: list[WarmRun] = []
    for round_index in range(plan.rounds):
        order = (
            lineup[round_index % len(lineup) :] + lineup[: round_index % len(lineup)]
        )
        for placement in bench.placements:
            for contender in order:
                run = await measure_warm(bench, contender, placement, plan, round_index)
                runs.append(run)
                bench.progress(
                    f"{label} round {round_index + 1}/{plan.rounds}, "
                    f"{placement.name}: {contender.name:<24} "
                    f"median {run.spread.median:7.1f} us, "
                    f"cpu {run.cpu_us:6.1f} us/invocation"
                )
    return runs


def round_ratios(
    runs: list[WarmRun], placement: str, numerator: str, denominator: str
) -> list[float]:
    """Per round: median of ``numerator`` over median of ``denominator``."""
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        if run.placement == placement:
            by_round.setdefault(run.round, {})[run.contender] = run.spread.median
    return [
        medians[numerator] / medians[denominator]
        for medians in by_round.values()
        if numerator in medians and denominator in medians
    ]


def pooled(runs: list[WarmRun], placement: str, contender: str) -> list[WarmRun]:
    return [r for r in runs if r.placement == placement and r.contender == contender]


def summary(runs: list[WarmRun], placement: str, contender: str) -> dict[str, Any]:
    """Pooled spread, CPU and per-round medians of one contender."""
    mine = pooled(runs, placement, contender)
    intervals = [value for run in mine for value in run.intervals_us]
    return {
        **Spread.of(intervals).as_json(),
        "cpu_us": median([run.cpu_us for run in mine]),
        "round_medians": [run.spread.median for run in mine],
        "first_next_ms": median([run.first_next_ms for run in mine]),
    }


async def run(bench: Bench) -> Section:
    plan = Plan.for_bench(bench)
    lineup = contenders()
    runs = await alternate(bench, lineup, plan, "overhead")

    section = Section("overhead", TITLE)
    section.figures = {
        "plan": vars(plan),
        "contenders": {c.name: c.note for c in lineup},
        "placements": {p.name: vars(p) for p in bench.placements},
    }
    bare, ric = "bare loop", "awslambdaric"
    for placement in bench.placements:
        figures: dict[str, Any] = {}
        table = Table(
            f"{TITLE}, {placement.name} ({plan.rounds} rounds x "
            f"{plan.events:,} invocations; us at the server)",
            ["contender", "median us", "p99 us", "cpu us", "x awslambdaric", "x bare"],
        )
        for contender in lineup:
            name = contender.name
            figures[name] = summary(runs, placement.name, name)
            versus_ric = round_ratios(runs, placement.name, name, ric)
            versus_bare = round_ratios(runs, placement.name, name, bare)
            figures[name]["x_awslambdaric"] = median(versus_ric)
            figures[name]["x_bare"] = median(versus_bare)
            table.rows.append(
                [
                    name,
                    figures[name]["median"],
                    figures[name]["p99"],
                    figures[name]["cpu_us"],
                    figures[name]["x_awslambdaric"],
                    figures[name]["x_bare"],
                ]
            )

        # above the floor: what each runtime adds to the bare loop's time
        above = {
            name: figures[name]["median"] - figures[bare]["median"] for name in figures
        }
        for name in figures:
            figures[name]["above_bare_us"] = above[name]
        section.figures[placement.name] = figures
        section.tables.append(table)

        for name in OURS:
            section.checks.append(
                Check(
                    f"{name} / awslambdaric, {placement.name}",
                    figures[name]["x_awslambdaric"],
                    LIMIT_VS_AWSLAMBDARIC,
                    detail=_range(round_ratios(runs, placement.name, name, ric)),
                )
            )
            section.checks.append(
                Check(
                    f"{name} / bare loop, {placement.name}",
                    figures[name]["x_bare"],
                    LIMIT_VS_BARE,
                    detail=_range(round_ratios(runs, placement.name, name, bare)),
                )
            )
        section.notes.append(
            f"{placement.name}: time above the bare loop, "
            + ", ".join(f"{name} {above[name]:.1f} us" for name in (*OURS, ric))
        )

    section.samples = samples(runs)
    section.plot = lambda path: plot_cdfs(
        path, runs, [c.name for c in lineup], bench.placements, TITLE
    )
    return section


def samples(runs: list[WarmRun]) -> dict[str, Any]:
    """Every interval of every run, for ``results/raw/``."""
    return {
        "intervals_us": [
            {
                "contender": r.contender,
                "placement": r.placement,
                "round": r.round,
                "values": [round(value, 1) for value in r.intervals_us],
            }
            for r in runs
        ]
    }


def plot_cdfs(
    path: Path,
    runs: list[WarmRun],
    names: list[str],
    placements: tuple[Placement, ...],
    title: str,
) -> None:
    """One panel per placement: the distribution of each contender's times."""
    from .report import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(
        1, len(placements), figsize=(6 * len(placements), 4.2), squeeze=False
    )
    for axis, placement in zip(axes[0], placements, strict=True):
        for name in names:
            values = sorted(
                value
                for r in pooled(runs, placement.name, name)
                for value in r.intervals_us
            )
            if values:
                fractions = [(index + 1) / len(values) for index in range(len(values))]
                axis.plot(values, fractions, label=name)
        # a log axis keeps both the medians and the long tails readable
        axis.set_xscale("log")
        axis.set_title(placement.name)
        axis.set_xlabel("microseconds per invocation (at the server, log scale)")
        axis.set_ylabel("fraction of invocations")
        axis.grid(alpha=0.3, which="both")
        axis.legend(loc="lower right", fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _range(ratios: list[float]) -> str:
    if not ratios:
        return ""
    return f"rounds {min(ratios):.2f}-{max(ratios):.2f}"
