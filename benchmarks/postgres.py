"""PostgreSQL: a warm pooled query against the cold start that opened the pool.

The handler (``task_root/bench_pg.Query``) opens a ``PostgresPool`` of one
connection in ``init`` and runs one catalog query per invocation.  Each run
starts statefulrt with it against a fresh session:

- **cold**: from just before the spawn to the server receiving the first
  response: interpreter, statefulrt, asyncpg, the pool's connection (init),
  the first ``next`` and the first query, as a cold invoke pays on Lambda;
- **warm**: then a batch of invocations, each timed at the server from the
  event going out to its response coming in: the pooled query and the
  runtime's own work.

The server is the one named by ``STATEFULRT_TEST_PG_DSN`` when it is set (as
the plugin's tests use); otherwise a throwaway cluster under a temporary
folder, started with the binaries and the account the plugin tests'
``conftest.py`` finds, on 127.0.0.1 only, and stopped by its pid at the end.
Without either the benchmark is skipped, and the table says why.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contenders import Contender, group_members, launched, statefulrt, until_idle
from .figures import Check, Section, Spread, Table, median
from .registry import Bench

TITLE = "PostgreSQL pool: cold invoke vs warm invoke"
HANDLER = "bench_pg.Query"
DSN_ENV = "STATEFULRT_TEST_PG_DSN"
# DESIGN.md, "Performance bar": warm at most 1/10 of cold
LIMIT_WARM_VS_COLD = 0.10
_START_TIMEOUT = 30.0


@dataclass
class PgRun:
    ready_ms: float  # spawn to the first `next`: init, pool connect included
    cold_ms: float  # spawn to the first response
    first_ms: float  # the first event out to its response in
    warm_ms: list[float]  # every later event, out to response in


class NoServer(Exception):
    """No PostgreSQL server to measure against; the message says why."""


async def run(bench: Bench) -> Section:
    runs_each = 3 if bench.quick else 10
    warm_each = 100 if bench.quick else 300
    try:
        async with postgres_dsn(bench) as (dsn, source):
            contender = statefulrt(
                "statefulrt", HANDLER, env={"STATEFULRT_PG_DSN": dsn}
            )
            # unmeasured: page cache, bytecode, the server's catalog cache
            await measure(bench, contender, 10)
            runs = []
            for index in range(runs_each):
                result = await measure(bench, contender, warm_each)
                runs.append(result)
                bench.progress(
                    f"postgres run {index + 1}/{runs_each}: cold "
                    f"{result.cold_ms:.0f} ms, warm p50 "
                    f"{median(result.warm_ms) * 1000:.0f} us"
                )
    except NoServer as exc:
        return Section("postgres", TITLE, skipped=str(exc))

    cold = Spread.of([r.cold_ms for r in runs])
    ready = Spread.of([r.ready_ms for r in runs])
    first = Spread.of([r.first_ms for r in runs])
    warm = Spread.of([value for r in runs for value in r.warm_ms])
    ratio = warm.median / cold.median

    section = Section("postgres", TITLE)
    table = Table(
        f"{TITLE} ({runs_each} cold starts, {warm_each} warm invocations after "
        f"each; ms; server: {source})",
        ["figure", "median ms", "p99 ms", "x cold"],
    )
    table.rows.append(["cold: spawn to first response", cold.median, cold.p99, 1.0])
    table.rows.append(
        [
            "  of which spawn to first next (init, pool open)",
            ready.median,
            ready.p99,
            ready.median / cold.median,
        ]
    )
    table.rows.append(
        ["first invocation: event out to response in", first.median, first.p99, None]
    )
    table.rows.append(
        [
            "warm invocation: event out to response in",
            warm.median,
            warm.p99,
            f"{ratio:.4f}",
        ]
    )
    section.tables.append(table)
    section.checks.append(
        Check(
            "PostgreSQL: warm invoke p50 / cold invoke",
            ratio,
            LIMIT_WARM_VS_COLD,
            digits=4,
            detail=f"warm {warm.median * 1000:.0f} us, cold {cold.median:.0f} ms",
        )
    )
    section.figures = {
        "runs_each": runs_each,
        "warm_each": warm_each,
        "server": source,
        "handler": HANDLER,
        "cold_ms": cold.as_json(),
        "ready_ms": ready.as_json(),
        "first_invocation_ms": first.as_json(),
        "warm_ms": warm.as_json(),
        "ratio_warm_cold": ratio,
    }
    section.samples = {"runs": [vars(r) for r in runs]}
    section.plot = lambda path: plot_postgres(path, runs)
    return section


async def measure(bench: Bench, contender: Contender, warm: int) -> PgRun:
    server = bench.server
    session = server.new_session(1)
    async with launched(contender, server.address) as process:
        await until_idle(session, process, contender, timeout=60)
        session.release(warm)
        await until_idle(session, process, contender, timeout=60 + warm / 50)
    started = process.started_ns
    return PgRun(
        ready_ms=(session.next_ns[0] - started) / 1e6,
        cold_ms=(session.response_ns[0] - started) / 1e6,
        first_ms=session.latency_ns[0] / 1e6,
        warm_ms=[ns / 1e6 for ns in session.latency_ns[1:]],
    )


@asynccontextmanager
async def postgres_dsn(bench: Bench) -> AsyncIterator[tuple[str, str]]:
    """A DSN to measure against and where it came from; raises ``NoServer``."""
    from_env = os.environ.get(DSN_ENV)
    if from_env:
        if not await _answers(from_env):
            raise NoServer(f"{DSN_ENV} is set but its server does not answer")
        yield from_env, DSN_ENV
        return
    async with _throwaway_cluster(bench) as dsn:
        yield dsn, "a throwaway cluster"


@asynccontextmanager
async def _throwaway_cluster(bench: Bench) -> AsyncIterator[str]:
    try:
        import asyncpg  # noqa: F401 - the handler needs it too

        # the plugin tests' discovery: PATH, then Debian's and PGDG's folders
        from tests.plugins.conftest import _pg_bindir, _pg_user, free_port
    except ImportError as exc:
        raise NoServer(
            f"{DSN_ENV} is not set and no cluster can be started here ({exc}); "
            "run from the repository root with the dev dependencies"
        ) from exc
    bindir = _pg_bindir()
    user = _pg_user()
    if bindir is None or user is None:
        raise NoServer(
            f"no PostgreSQL server: set {DSN_ENV}, or install the server "
            "binaries (apt-get install postgresql) and, as root, the "
            "'postgres' account, so a throwaway cluster can be started"
        )

    root = Path(tempfile.mkdtemp(prefix="statefulrt-bench-pg-"))
    owner = pwd.getpwnam(user)
    os.chown(root, owner.pw_uid, owner.pw_gid)
    # initdb refuses to run as root; uvloop's subprocesses cannot switch
    # user, so these two start through the subprocess module
    as_user: dict[str, Any] = {"user": user} if os.geteuid() == 0 else {}
    server: subprocess.Popen[bytes] | None = None
    try:
        # a cluster that trusts loopback; fsync off, it is thrown away
        def create() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [str(bindir / "initdb"), "-D", str(root / "data"), "--auth=trust"]
                + ["-U", "postgres", "-E", "UTF8", "--no-sync"],
                cwd=root,
                capture_output=True,
                timeout=120,
                **as_user,
            )

        initdb = await asyncio.to_thread(create)
        if initdb.returncode != 0:
            tail = initdb.stderr.decode(errors="replace")[-500:]
            raise NoServer(f"initdb failed: {tail}")

        port = free_port()
        with open(root / "server.log", "wb") as log:
            server = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(root / "data"), "-k", str(root)]
                + ["-h", "127.0.0.1", "-p", str(port), "-F"],
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                **as_user,
            )
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT
        while not await _answers(dsn):
            if server.poll() is not None or (
                asyncio.get_running_loop().time() > deadline
            ):
                tail = (root / "server.log").read_text(errors="replace")[-800:]
                raise NoServer(f"the throwaway PostgreSQL did not start:\n{tail}")
            await asyncio.sleep(0.1)
        bench.progress(f"postgres: throwaway cluster on port {port}")
        yield dsn
    finally:
        if server is not None:
            await _stop(server)
        shutil.rmtree(root, ignore_errors=True)


async def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGINT (PostgreSQL's fast shutdown), then SIGKILL, each by pid."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(server.wait, 10)
            return
        except subprocess.TimeoutExpired:
            pass
    for pid in group_members(server.pid):
        if pid != server.pid:
            os.kill(pid, signal.SIGKILL)
    if server.poll() is None:
        server.kill()
    await asyncio.to_thread(server.wait, 10)


async def _answers(dsn: str) -> bool:
    import asyncpg

    try:
        connection = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await connection.close()
    return True


def plot_postgres(path: Path, runs: list[PgRun]) -> None:
    from .report import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    data = [
        [r.cold_ms for r in runs],
        [r.ready_ms for r in runs],
        [r.first_ms for r in runs],
        [value for r in runs for value in r.warm_ms],
    ]
    labels = ["cold invoke", "spawn to\nfirst next", "first\ninvocation", "warm"]
    axis.boxplot(data, whis=(1, 99), showfliers=False)
    axis.set_xticks(range(1, len(labels) + 1), labels, fontsize="small")
    axis.set_yscale("log")
    axis.set_ylabel("milliseconds (log scale)")
    axis.grid(alpha=0.3, axis="y", which="both")
    for index, values in enumerate(data, start=1):
        axis.annotate(
            f"{median(values):.3g} ms",
            (index, median(values)),
            xytext=(34, 0),
            textcoords="offset points",
            fontsize="small",
            va="center",
        )
    axis.set_title(f"{TITLE} (whiskers p1-p99)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
