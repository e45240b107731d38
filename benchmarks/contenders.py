"""The runtimes being measured, and how one run of one of them goes.

A contender is a command line and the environment Lambda would give it.  A run
starts it against a fresh server session, waits until it has spent the
session's budget (its next ``next`` is parked), and kills it: every process
started here is killed and reaped in a ``finally``, whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .minimal_server import RuntimeApiServer, Session

HERE = Path(__file__).resolve().parent
TASK_ROOT = HERE / "task_root"
BARE_LOOP = HERE / "bare_loop.py"

# Variables of the benchmark's own shell that would change how a contender
# runs (awslambdaric forks workers when AWS_LAMBDA_MAX_CONCURRENCY is set).
_SCRUBBED_PREFIXES = ("AWS_LAMBDA_", "AWS_EXECUTION_ENV", "_HANDLER", "STATEFULRT_")


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
) -> Contender:
    env = {"STATEFULRT_TRANSPORT": transport} if transport else {}
    return Contender(
        name,
        (sys.executable, "-m", "statefulrt", handler),
        env,
        note=f"python -m statefulrt {handler}"
        + (f" (STATEFULRT_TRANSPORT={transport})" if transport else ""),
    )


def awslambdaric(handler: str = "bench_handlers.noop") -> Contender:
    return Contender(
        "awslambdaric",
        (sys.executable, "-m", "awslambdaric", handler),
        note=f"python -m awslambdaric {handler}",
    )


def bare_loop() -> Contender:
    return Contender(
        "bare loop",
        (sys.executable, str(BARE_LOOP)),
        note="blocking socket, GET next + POST response, nothing else",
    )


def environment(contender: Contender, runtime_api: str) -> dict[str, str]:
    """The environment Lambda would give the function, plus the contender's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_SCRUBBED_PREFIXES)
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
        self, process: asyncio.subprocess.Process, started_ns: int, stderr: Path
    ) -> None:
        self.process = process
        self.started_ns = started_ns
        self._stderr = stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident set size now, from ``/proc/PID/status`` (``VmRSS``)."""
        return _status_field(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return _status_field(self.pid, "VmHWM")

    def output_tail(self, lines: int = 15) -> str:
        try:
            text = self._stderr.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@asynccontextmanager
async def launched(contender: Contender, runtime_api: str) -> AsyncIterator[Process]:
    """Start ``contender``; on exit kill it and wait for it, always."""
    env = environment(contender, runtime_api)
    with tempfile.NamedTemporaryFile(
        prefix="statefulrt-bench-", suffix=".stderr", delete=False
    ) as stderr:
        stderr_path = Path(stderr.name)
        started_ns = time.perf_counter_ns()
        process = await asyncio.create_subprocess_exec(
            *contender.argv,
            cwd=TASK_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stderr,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield Process(process, started_ns, stderr_path)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        stderr_path.unlink(missing_ok=True)


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
    server: RuntimeApiServer, contender: Contender, events: int, timeout: float
) -> Session:
    """Start ``contender``, let it handle ``events`` events, stop it."""
    session = server.new_session(events)
    async with launched(contender, server.address) as process:
        await until_idle(session, process, contender, timeout)
    return session


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RunFailed(f"/proc/{pid}/status has no {name} line")
