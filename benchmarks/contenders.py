"""The runtimes being measured, and how one run of one of them goes.

A contender is a command line and the environment Lambda would give it.  A run
starts it against a fresh server session, waits until it has spent the
session's budget (its next ``next`` is parked), and kills it: every process
started here is killed and reaped in a ``finally``, whatever happened.  A
contender starts in a process group of its own, so the workers it forks
(awslambdaric's Managed Instances mode) are found, measured and killed too,
each by its pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .minimal_server import RuntimeApiServer, Session

HERE = Path(__file__).resolve().parent
TASK_ROOT = HERE / "task_root"
BARE_LOOP = HERE / "bare_loop.py"

# The benchmark's own environment, minus what would change how a contender
# runs: Lambda's variables (awslambdaric forks workers when
# AWS_LAMBDA_MAX_CONCURRENCY is set) and interpreter switches such as
# PYTHONDONTWRITEBYTECODE, which would make statefulrt compile itself on every
# start while pip cached awslambdaric's bytecode at install.
_SCRUBBED_PREFIXES = ("AWS_LAMBDA_", "AWS_EXECUTION_ENV", "_HANDLER", "STATEFULRT_")
_KEPT_PYTHON_VARIABLES = ("PYTHONPATH", "PYTHONHOME")


class RunFailed(RuntimeError):
    """A contender exited, stalled or answered with errors during a run."""


@dataclass(frozen=True)
class Contender:
    """One runtime under test: a name for the table and a command to start."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    note: str = ""


def statefulrt(
    name: str = "statefulrt",
    handler: str = "bench_handlers.noop",
    transport: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Contender:
    settings = dict(env or {})
    if transport:
        settings["STATEFULRT_TRANSPORT"] = transport
    return Contender(
        name,
        (sys.executable, "-m", "statefulrt", handler),
        settings,
        note=f"python -m statefulrt {handler}" + _shown_env(settings),
    )


def awslambdaric(
    handler: str = "bench_handlers.noop",
    name: str = "awslambdaric",
    env: Mapping[str, str] | None = None,
) -> Contender:
    settings = dict(env or {})
    return Contender(
        name,
        (sys.executable, "-m", "awslambdaric", handler),
        settings,
        note=f"python -m awslambdaric {handler}" + _shown_env(settings),
    )


def bare_loop() -> Contender:
    return Contender(
        "bare loop",
        (sys.executable, str(BARE_LOOP)),
        note="blocking socket, GET next + POST response, nothing else",
    )


@dataclass(frozen=True)
class Placement:
    """The CPUs the server (this process) and the runtime under test run on.

    On one core the two take turns, so the time per invocation is the CPU both
    spend.  On two cores each waits for the other's wake-up, which on a VM
    costs tens of microseconds per request and is the same for every runtime.
    Pinning both ways keeps the scheduler from switching between the two
    halfway through a run.
    """

    name: str
    server_cpu: int
    runtime_cpu: int


@cache
def usable_cpus() -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(0)))


def placements() -> tuple[Placement, ...]:
    cpus = usable_cpus()
    one_core = Placement("one core", cpus[0], cpus[0])
    if len(cpus) < 2:
        return (one_core,)
    return (one_core, Placement("two cores", cpus[0], cpus[1]))


def environment(contender: Contender, runtime_api: str) -> dict[str, str]:
    """The environment Lambda would give the function, plus the contender's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_SCRUBBED_PREFIXES)
        and (not key.startswith("PYTHON") or key in _KEPT_PYTHON_VARIABLES)
    }
    env.update(
        AWS_LAMBDA_RUNTIME_API=runtime_api,
        LAMBDA_TASK_ROOT=str(TASK_ROOT),
        AWS_LAMBDA_FUNCTION_NAME="bench",
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128",
    )
    env.update(contender.env)
    return env


class Process:
    """A started contender: its pid, when it was started, and its output."""

    def __init__(
        self, process: asyncio.subprocess.Process, started_ns: int, output: Path
    ) -> None:
        self.process = process
        self.started_ns = started_ns
        self.output = output

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident set size now, from ``/proc/PID/status`` (``VmRSS``)."""
        return _status_field(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return _status_field(self.pid, "VmHWM")

    def cpu_ns(self) -> int:
        """CPU time of all its live threads so far, from ``schedstat``."""
        return _cpu_ns(self.pid)

    def tree(self) -> list[int]:
        """Its pid and those of every live process it started (its group)."""
        return group_members(self.pid)

    def tree_cpu_ns(self) -> int:
        return sum(_cpu_ns(pid) for pid in self.tree())

    def tree_memory_kib(self) -> dict[str, int]:
        """Summed over the tree: ``rss`` (VmRSS), ``pss`` and ``peak`` (VmHWM).

        Forked workers share their parent's pages until they write to them:
        VmRSS counts a shared page in every process, the proportional set
        size (Pss) divides it among them.
        """
        totals = {"rss": 0, "pss": 0, "peak": 0, "processes": 0}
        for pid in self.tree():
            try:
                totals["rss"] += _status_field(pid, "VmRSS")
                totals["peak"] += _status_field(pid, "VmHWM")
                totals["pss"] += _rollup_field(pid, "Pss")
            except (OSError, RunFailed):
                continue  # it ended meanwhile
            totals["processes"] += 1
        return totals

    def output_tail(self, lines: int = 15) -> str:
        try:
            text = self.output.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@asynccontextmanager
async def launched(
    contender: Contender,
    runtime_api: str,
    placement: Placement | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Process]:
    """Start ``contender``; on exit kill it and wait for it, always.

    With a ``placement`` the child is born on its runtime CPU (it inherits the
    affinity this process has while spawning) and this process, the server,
    moves to the server CPU.  Without one, both may run anywhere.
    """
    env = environment(contender, runtime_api)
    env.update(extra_env or {})
    runtime_cpus = {placement.runtime_cpu} if placement else set(usable_cpus())
    server_cpus = {placement.server_cpu} if placement else set(usable_cpus())
    with tempfile.NamedTemporaryFile(
        prefix="statefulrt-bench-", suffix=".out", delete=False
    ) as output:
        output_path = Path(output.name)
        os.sched_setaffinity(0, runtime_cpus)
        try:
            started_ns = time.perf_counter_ns()
            process = await asyncio.create_subprocess_exec(
                *contender.argv,
                cwd=TASK_ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its group holds whatever it forks
            )
        finally:
            os.sched_setaffinity(0, server_cpus)
    try:
        yield Process(process, started_ns, output_path)
    finally:
        await _kill_group(process)
        output_path.unlink(missing_ok=True)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """Kill the process and everything in its group, each by its pid.

    Workers go first, so a parent that waits for them (awslambdaric's) reaps
    them; then the parent, which this process reaps.
    """
    leader = process.pid
    for _attempt in range(3):
        workers = [pid for pid in group_members(leader) if pid != leader]
        if not workers:
            break
        for pid in workers:
            _kill(pid)
        await asyncio.sleep(0.05)
    if process.returncode is None:
        _kill(leader)
    await process.wait()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone


def group_members(leader: int) -> list[int]:
    """Live processes in the process group of ``leader`` (zombies left out)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # the command name may hold spaces: fields start after its ')'
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == leader and fields[0] != "Z":
            members.append(int(entry.name))
    return sorted(members)


async def until_idle(
    session: Session, process: Process, contender: Contender, timeout: float
) -> None:
    """Wait until ``session`` parks a ``next``: its budget is spent.

    Raises ``RunFailed`` when the process exits first, when the wait passes
    ``timeout`` seconds, or when the contender reported errors.
    """
    idle = asyncio.ensure_future(session.idle.wait())
    exited = asyncio.ensure_future(process.process.wait())
    try:
        await asyncio.wait(
            (idle, exited), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        idle.cancel()
        exited.cancel()

    problem = ""
    if process.process.returncode is not None:
        problem = f"exited with {process.process.returncode}"
    elif not session.idle.is_set():
        problem = (
            f"stalled: {session.responses} of {session.budget} events answered "
            f"after {timeout:.0f} s"
        )
    elif session.errors or session.protocol_errors or session.unknown_ids:
        first = session.errors[0][:300] if session.errors else b""
        problem = (
            f"{len(session.errors)} error posts, {session.unknown_ids} unknown "
            f"request ids, protocol errors {session.protocol_errors[:3]}; "
            f"first error: {first!r}"
        )
    elif session.responses != session.handed_out:
        problem = f"answered {session.responses} of {session.handed_out} events"
    if problem:
        tail = process.output_tail()
        raise RunFailed(
            f"{contender.name} ({contender.note}): {problem}"
            + (f"\n--- its output ---\n{tail}" if tail else "")
        )


async def run_events(
    server: RuntimeApiServer,
    contender: Contender,
    events: int,
    timeout: float,
    placement: Placement | None = None,
) -> Session:
    """Start ``contender``, let it handle ``events`` events, stop it."""
    session = server.new_session(events)
    async with launched(contender, server.address, placement) as process:
        await until_idle(session, process, contender, timeout)
    return session


def _shown_env(env: Mapping[str, str]) -> str:
    if not env:
        return ""
    return " (" + ", ".join(f"{key}={value}" for key, value in env.items()) + ")"


def _cpu_ns(pid: int) -> int:
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0  # it ended
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    return total


def _rollup_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RunFailed(f"/proc/{pid}/smaps_rollup has no {name} line")


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RunFailed(f"/proc/{pid}/status has no {name} line")
