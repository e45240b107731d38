"""Managed Instances: 16 slots and an I/O-bound handler, one process vs 16.

With ``AWS_LAMBDA_MAX_CONCURRENCY=16`` both runtimes keep 16 ``next``
long-polls open at once, as Lambda Managed Instances expect:

- statefulrt runs 16 pollers in one process, each on its own keep-alive
  connection, and the ``async def`` handler (``bench_io.asleep``: await
  ``asyncio.sleep(0.02)``) on its one event loop;
- awslambdaric 4.x forks 16 worker processes (``MultiConcurrentRunner``),
  each polling on its own and running the plain handler (``bench_io.sleep``:
  ``time.sleep(0.02)``), one invocation at a time, since it cannot await.

The server hands an event to every ``next`` at once while the budget lasts,
so all 16 slots stay busy.  After start (all 16 polls parked) and a warm-up
batch, one measured batch of events goes out; throughput is that count over
the time from its release to its last response.  Latency is event out to
response in, per invocation, at the server.  Memory is summed over the
contender's processes once the batch is done (idle, every page it touched
still resident): ``VmRSS``, which counts a page shared by forked workers once
per process, and the proportional set size (``Pss``), which divides it among
them.  CPU is that of every thread of every process during the batch.

Neither side is pinned to a CPU: 16 workers and their server share the two.
Rounds alternate the contenders; ratios are taken within a round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contenders import Contender, awslambdaric, launched, statefulrt, until_idle
from .figures import Check, Section, Spread, Table, median
from .registry import Bench

TITLE = "Managed Instances, 16 slots, handler waiting 20 ms on I/O"
SLOTS = 16
# DESIGN.md, "Performance bar": at least the throughput, at most 1/8 of the
# memory of awslambdaric's 16 processes
LIMIT_THROUGHPUT = 1.0
LIMIT_MEMORY = 1 / 8
OURS, THEIRS = "statefulrt (one process)", "awslambdaric (16 processes)"


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: int
    events: int

    @classmethod
    def for_bench(cls, bench: Bench) -> Plan:
        if bench.quick:
            return cls(rounds=1, warmup=160, events=1500)
        return cls(rounds=3, warmup=320, events=3000)


@dataclass
class ManagedRun:
    contender: str
    round: int
    per_second: float
    latency_ms: list[float]
    cpu_us: float  # per invocation, every thread of every process
    ready_ms: float  # spawn to the 16th `next`
    idle: dict[str, int] = field(default_factory=dict)  # KiB, after start
    after: dict[str, int] = field(default_factory=dict)  # KiB, after the batch


def contenders() -> list[Contender]:
    slots = {"AWS_LAMBDA_MAX_CONCURRENCY": str(SLOTS)}
    return [
        statefulrt(OURS, "bench_io.asleep", env=slots),
        awslambdaric("bench_io.sleep", name=THEIRS, env=slots),
    ]


async def measure(
    bench: Bench, contender: Contender, plan: Plan, round_index: int
) -> ManagedRun:
    server = bench.server
    session = server.new_session(0, pollers=SLOTS)
    # 20 ms a slot: far above any sane runtime
    timeout = 60 + plan.events * 0.02
    async with launched(contender, server.address) as process:
        # start: every slot parked in its first `next`
        await until_idle(session, process, contender, timeout=60)
        ready_ms = (session.next_ns[-1] - process.started_ns) / 1e6
        idle = process.tree_memory_kib()

        session.release(plan.warmup)
        await until_idle(session, process, contender, timeout)

        # the measured batch, from its release to its last response
        cpu_before = process.tree_cpu_ns()
        first_latency = len(session.latency_ns)
        released_ns = time.perf_counter_ns()
        session.release(plan.events)
        await until_idle(session, process, contender, timeout)
        elapsed_ns = session.response_ns[-1] - released_ns
        cpu_after = process.tree_cpu_ns()
        after = process.tree_memory_kib()

    if idle["processes"] != after["processes"]:
        bench.progress(
            f"{contender.name}: {idle['processes']} processes after start, "
            f"{after['processes']} after the batch"
        )
    return ManagedRun(
        contender=contender.name,
        round=round_index,
        per_second=plan.events / (elapsed_ns / 1e9),
        latency_ms=[ns / 1e6 for ns in session.latency_ns[first_latency:]],
        cpu_us=(cpu_after - cpu_before) / plan.events / 1000,
        ready_ms=ready_ms,
        idle=idle,
        after=after,
    )


async def run(bench: Bench) -> Section:
    plan = Plan.for_bench(bench)
    lineup = contenders()
    runs: list[ManagedRun] = []
    for round_index in range(plan.rounds):
        order = lineup[round_index % 2 :] + lineup[: round_index % 2]
        for contender in order:
            result = await measure(bench, contender, plan, round_index)
            runs.append(result)
            bench.progress(
                f"managed round {round_index + 1}/{plan.rounds}: "
                f"{contender.name:<28} {result.per_second:6.0f} invocations/s, "
                f"p50 {median(result.latency_ms):5.1f} ms, "
                f"RSS {result.after['rss'] / 1024:6.1f} MiB in "
                f"{result.after['processes']} processes"
            )

    figures: dict[str, Any] = {"plan": vars(plan), "slots": SLOTS}
    table = Table(
        f"{TITLE} ({plan.rounds} rounds x {plan.events:,} invocations; "
        "memory summed over the processes, MiB)",
        [
            "contender",
            "invocations/s",
            "x awslambdaric",
            "p50 ms",
            "p99 ms",
            "cpu us",
            "processes",
            "RSS",
            "PSS",
            "peak RSS",
            "RSS x awslambdaric",
        ],
    )
    throughput_ratios = _round_ratios(runs, lambda r: r.per_second)
    rss_ratios = _round_ratios(runs, lambda r: float(r.after["rss"]))
    pss_ratios = _round_ratios(runs, lambda r: float(r.after["pss"]))
    for contender in lineup:
        mine = [r for r in runs if r.contender == contender.name]
        latency = Spread.of([value for r in mine for value in r.latency_ms])
        summary: dict[str, Any] = {
            "invocations_per_second": median([r.per_second for r in mine]),
            "per_round": [r.per_second for r in mine],
            "latency_ms": latency.as_json(),
            "cpu_us": median([r.cpu_us for r in mine]),
            "ready_ms": median([r.ready_ms for r in mine]),
            "processes": mine[-1].after["processes"],
            "after_kib": {k: median([r.after[k] for r in mine]) for k in _KINDS},
            "idle_kib": {k: median([r.idle[k] for r in mine]) for k in _KINDS},
        }
        figures[contender.name] = summary
        ours = contender.name == OURS
        table.rows.append(
            [
                contender.name,
                summary["invocations_per_second"],
                median(throughput_ratios) if ours else 1.0,
                latency.median,
                latency.p99,
                summary["cpu_us"],
                summary["processes"],
                summary["after_kib"]["rss"] / 1024,
                summary["after_kib"]["pss"] / 1024,
                summary["after_kib"]["peak"] / 1024,
                median(rss_ratios) if ours else 1.0,
            ]
        )
    figures["ratio_throughput"] = median(throughput_ratios)
    figures["ratio_rss"] = median(rss_ratios)
    figures["ratio_pss"] = median(pss_ratios)

    section = Section("managed", TITLE)
    section.tables.append(table)
    section.checks.append(
        Check(
            "Managed Instances: statefulrt / awslambdaric throughput",
            median(throughput_ratios),
            LIMIT_THROUGHPUT,
            at_least=True,
            detail=_range(throughput_ratios),
        )
    )
    section.checks.append(
        Check(
            "Managed Instances: statefulrt / awslambdaric memory (VmRSS)",
            median(rss_ratios),
            LIMIT_MEMORY,
            digits=3,
            detail=f"PSS {median(pss_ratios):.3f}x",
        )
    )
    ideal = SLOTS / 0.02
    section.notes.append(
        f"managed: 16 slots waiting 20 ms allow at most {ideal:,.0f} "
        f"invocations/s; statefulrt reached "
        f"{figures[OURS]['invocations_per_second'] / ideal:.0%} of it, "
        f"awslambdaric {figures[THEIRS]['invocations_per_second'] / ideal:.0%}; "
        f"ready (16th next) after {figures[OURS]['ready_ms']:.0f} ms vs "
        f"{figures[THEIRS]['ready_ms']:.0f} ms"
    )
    section.figures = figures
    section.samples = {
        "runs": [
            {
                "contender": r.contender,
                "round": r.round,
                "per_second": r.per_second,
                "latency_ms": [round(value, 3) for value in r.latency_ms],
                "idle_kib": r.idle,
                "after_kib": r.after,
            }
            for r in runs
        ]
    }
    section.plot = lambda path: plot_managed(path, runs, [c.name for c in lineup])
    return section


_KINDS = ("rss", "pss", "peak")


def _round_ratios(runs: list[ManagedRun], value: Any) -> list[float]:
    """Per round: ``value`` of statefulrt over that of awslambdaric."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        by_round.setdefault(r.round, {})[r.contender] = value(r)
    return [
        values[OURS] / values[THEIRS]
        for values in by_round.values()
        if OURS in values and THEIRS in values
    ]


def _range(ratios: list[float]) -> str:
    return f"rounds {min(ratios):.2f}-{max(ratios):.2f}" if ratios else ""


def plot_managed(path: Path, runs: list[ManagedRun], names: list[str]) -> None:
    from .report import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    throughput = [
        median([r.per_second for r in runs if r.contender == n]) for n in names
    ]
    memory = {
        kind: [
            median([r.after[kind] / 1024 for r in runs if r.contender == n])
            for n in names
        ]
        for kind in ("rss", "pss")
    }
    positions = range(len(names))
    axes[0].bar(positions, throughput, color=["tab:blue", "tab:orange"])
    axes[0].axhline(SLOTS / 0.02, color="grey", linestyle="--", linewidth=1)
    axes[0].set_xticks(positions, names, fontsize="small")
    axes[0].set_ylabel("invocations per second")
    axes[0].set_title("throughput (dashed: 16 slots x 1/20 ms)")
    width = 0.38
    axes[1].bar([p - width / 2 for p in positions], memory["rss"], width, label="VmRSS")
    axes[1].bar([p + width / 2 for p in positions], memory["pss"], width, label="PSS")
    axes[1].set_xticks(positions, names, fontsize="small")
    axes[1].set_ylabel("MiB, summed over the processes")
    axes[1].set_title("resident memory after the batch")
    axes[1].legend(fontsize="small")
    for axis in axes:
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle(TITLE)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
