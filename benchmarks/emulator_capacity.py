"""The built-in emulator's own capacity, through its invoke endpoint.

``statefulrt emulate --port 0 [--freeze] -- RUNTIME`` runs as a user runs it,
in a process of its own, with a no-op function: statefulrt's ``async def``
(``bench_handlers.anoop``) or awslambdaric's plain one
(``bench_handlers.noop``).  This process invokes it over one keep-alive
connection, one invocation at a time as a single caller would (the function
has one slot), and times each ``POST .../invocations`` from request out to
answer in.  Both modes are measured: without freezing (``emulate``'s default)
and with it (``statefulrt dev``'s default: the runtime is stopped between
invocations, as Lambda does).

For scale, each round also runs the same runtime against the benchmarks'
minimal Runtime API server (the one every other figure uses), both on one
core: the time per invocation there is the runtime's own cycle in CPU time,
so the difference to the invoke latency is, at most, what the emulator adds
(its invoke endpoint, its Runtime API, its bookkeeping and REPORT lines, the
freezing, and the wake-ups of three processes on two cores).  The other
benchmarks do not go through the emulator; this one says how many invocations
a second a local test or ``statefulrt dev`` session can drive, and whether
the emulator or the runtime sets that pace.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from statefulrt._http import HttpConnection

from .contenders import (
    TASK_ROOT,
    Contender,
    RunFailed,
    awslambdaric,
    environment,
    run_events,
    statefulrt,
)
from .figures import Section, Spread, Table, median
from .registry import Bench

TITLE = "the emulator's capacity: sequential invokes of a no-op function"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
_READY = re.compile(rb"invoke with POST http://127\.0\.0\.1:(\d+)/")


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: int
    invocations: int

    @classmethod
    def for_bench(cls, bench: Bench) -> Plan:
        if bench.quick:
            return cls(rounds=1, warmup=50, invocations=300)
        return cls(rounds=3, warmup=100, invocations=1000)


@dataclass(frozen=True)
class Runtime:
    name: str
    argv: tuple[str, ...]
    direct: Contender  # the same runtime against the minimal server


@dataclass
class EmulatorRun:
    runtime: str
    freeze: bool
    round: int
    latency_us: list[float]
    per_second: float

    @property
    def mode(self) -> str:
        return "freeze" if self.freeze else "no freeze"


def runtimes() -> list[Runtime]:
    ours = statefulrt("statefulrt (async def)", "bench_handlers.anoop")
    theirs = awslambdaric("bench_handlers.noop")
    return [Runtime(c.name, c.argv, c) for c in (ours, theirs)]


def emulate_command() -> list[str]:
    """``statefulrt emulate`` as installed, or through the interpreter."""
    script = Path(sys.executable).with_name("statefulrt")
    if script.exists():
        return [str(script), "emulate"]
    code = "import sys; from statefulrt.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "emulate"]


async def measure(
    bench: Bench, runtime: Runtime, freeze: bool, plan: Plan, round_index: int
) -> EmulatorRun:
    flags = ["--freeze"] if freeze else []
    argv = [*emulate_command(), "--port", "0", *flags]
    async with _emulator([*argv, "--", *runtime.argv]) as port:
        connection = HttpConnection("127.0.0.1", port, user_agent="statefulrt-bench")
        try:
            for _ in range(plan.warmup):  # the cold start, then warm
                await _invoke(connection)
            latencies = []
            started = time.perf_counter_ns()
            for _ in range(plan.invocations):
                before = time.perf_counter_ns()
                await _invoke(connection)
                latencies.append((time.perf_counter_ns() - before) / 1000)
            elapsed = (time.perf_counter_ns() - started) / 1e9
        finally:
            connection.close()
    return EmulatorRun(
        runtime.name, freeze, round_index, latencies, plan.invocations / elapsed
    )


async def measure_direct(bench: Bench, runtime: Runtime, plan: Plan) -> list[float]:
    """The runtime's cycle at the minimal server: µs between its ``next``s."""
    session = await run_events(
        bench.server,
        runtime.direct,
        plan.warmup + plan.invocations,
        timeout=60,
        placement=bench.placements[0],  # one core: CPU time, no wake-ups
    )
    arrivals = session.next_ns[plan.warmup :]
    return [(later - earlier) / 1000 for earlier, later in pairwise(arrivals)]


async def run(bench: Bench) -> Section:
    plan = Plan.for_bench(bench)
    lineup = runtimes()
    runs: list[EmulatorRun] = []
    direct: dict[str, list[float]] = {r.name: [] for r in lineup}
    for round_index in range(plan.rounds):
        order = lineup[round_index % 2 :] + lineup[: round_index % 2]
        for runtime in order:
            for freeze in (False, True):
                result = await measure(bench, runtime, freeze, plan, round_index)
                runs.append(result)
                bench.progress(
                    f"emulator round {round_index + 1}/{plan.rounds}: "
                    f"{runtime.name:<24} {result.mode:<9} "
                    f"{result.per_second:6.0f} invocations/s, p50 "
                    f"{median(result.latency_us):6.0f} us"
                )
            direct[runtime.name] += await measure_direct(bench, runtime, plan)

    section = Section("emulator", TITLE)
    table = Table(
        f"{TITLE} ({plan.rounds} rounds x {plan.invocations:,} invocations, "
        "one caller; us per invoke at the caller)",
        [
            "runtime",
            "freeze",
            "invocations/s",
            "p50 us",
            "p99 us",
            "runtime cycle us (one core)",
            "emulator adds us",
        ],
    )
    figures: dict[str, Any] = {"plan": vars(plan)}
    for runtime in lineup:
        cycle = median(direct[runtime.name])
        figures[runtime.name] = {"runtime_cycle_us": cycle}
        for freeze in (False, True):
            mine = [r for r in runs if r.runtime == runtime.name and r.freeze == freeze]
            spread = Spread.of([value for r in mine for value in r.latency_us])
            rate = median([r.per_second for r in mine])
            figures[runtime.name][mine[0].mode] = {
                "invocations_per_second": rate,
                "latency_us": spread.as_json(),
                "emulator_us": spread.median - cycle,
            }
            table.rows.append(
                [
                    runtime.name,
                    "yes" if freeze else "no",
                    rate,
                    spread.median,
                    spread.p99,
                    cycle,
                    spread.median - cycle,
                ]
            )
    section.tables.append(table)

    ours, theirs = (figures[r.name] for r in lineup)
    for mode in ("no freeze", "freeze"):
        share = ours["runtime_cycle_us"] / ours[mode]["latency_us"]["median"]
        section.notes.append(
            f"emulator, {mode}: statefulrt's own cycle is {share:.0%} of an "
            f"invoke; {ours[mode]['invocations_per_second']:,.0f} invocations/s "
            f"with statefulrt, {theirs[mode]['invocations_per_second']:,.0f} "
            "with awslambdaric"
        )
    section.figures = figures
    section.samples = {
        "runs": [
            {
                "runtime": r.runtime,
                "freeze": r.freeze,
                "round": r.round,
                "per_second": r.per_second,
                "latency_us": [round(value, 1) for value in r.latency_us],
            }
            for r in runs
        ],
        "runtime_cycle_us": {
            name: [round(value, 1) for value in values]
            for name, values in direct.items()
        },
    }
    section.plot = lambda path: plot_emulator(path, runs, [r.name for r in lineup])
    return section


async def _invoke(connection: HttpConnection) -> None:
    response = await connection.request(
        "POST", INVOKE_PATH, b"{}", {"Content-Type": "application/json"}
    )
    if response.status != 200 or "x-amz-function-error" in response.headers:
        raise RunFailed(
            f"the emulator answered an invoke with {response.status}: "
            f"{response.body[:300]!r}"
        )


@asynccontextmanager
async def _emulator(argv: list[str]) -> AsyncIterator[int]:
    """Start ``statefulrt emulate``; yields its invoke port; stops it after.

    The emulator starts the runtime in a process group of its own, so its
    processes are looked up (by parent pid) before it is stopped, and any
    still alive after it are killed by their pid.
    """
    env = environment(Contender("emulator", tuple(argv)), "")
    del env["AWS_LAMBDA_RUNTIME_API"]  # the emulator hands out its own
    with tempfile.NamedTemporaryFile(
        prefix="statefulrt-bench-emulator-", suffix=".out", delete=False
    ) as output:
        output_path = Path(output.name)
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=TASK_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield await _port(process, output_path)
    finally:
        await _stop(process, output_path)


async def _port(process: asyncio.subprocess.Process, output: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = _READY.search(output.read_bytes())
        if found:
            return int(found.group(1))
        if process.returncode is not None:
            break
        await asyncio.sleep(0.02)
    tail = output.read_text(errors="replace")[-800:]
    raise RunFailed(f"statefulrt emulate did not start:\n{tail}")


async def _stop(process: asyncio.subprocess.Process, output: Path) -> None:
    # SIGINT is the emulator's Ctrl-C: it shuts the environment down first
    spawned = _descendants(process.pid)
    try:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        for pid in spawned:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    finally:
        output.unlink(missing_ok=True)


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    parents[int(entry.name)] = int(
                        stat.read().rpartition(")")[2].split()[1]
                    )
            except (OSError, ValueError, IndexError):
                continue
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def plot_emulator(path: Path, runs: list[EmulatorRun], names: list[str]) -> None:
    from .report import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for axis, freeze in zip(axes, (False, True), strict=True):
        for name in names:
            values = sorted(
                value
                for r in runs
                if r.runtime == name and r.freeze == freeze
                for value in r.latency_us
            )
            if values:
                fractions = [(i + 1) / len(values) for i in range(len(values))]
                axis.plot(values, fractions, label=name)
        axis.set_xscale("log")
        axis.set_title("freeze" if freeze else "no freeze")
        axis.set_xlabel("microseconds per invoke (at the caller, log scale)")
        axis.set_ylabel("fraction of invokes")
        axis.grid(alpha=0.3, which="both")
        axis.legend(loc="lower right", fontsize="small")
    figure.suptitle(TITLE)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
