"""The PostgreSQL pool under the real runtime and emulator, on a real server.

Each test gives the example handler its own table and application_name, so
the server's own view (``pg_stat_activity``) tells which connections the
handler holds. The handler's connections go through a loopback TCP proxy
that counts them and can drop them the way a NAT gateway drops idle flows.

Two ways a connection dies while the sandbox idles. A backend the server
terminates closes its socket, and asyncpg notices that by itself and
reconnects at the next acquire (so that test passes with revalidation off
too). A flow that a NAT gateway dropped looks alive until the next query,
which gets a reset: only the revalidation pings keep that one from the
handler, and the test with revalidation off shows the handler failing.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from loopback_faults import TcpProxy

from statefulrt.emulator import Emulator

asyncpg = pytest.importorskip("asyncpg", reason="pip install 'statefulrt[postgres]'")

HANDLER = "statefulrt_postgres.example.EventLog"
# Idle long enough to be past STATEFULRT_PG_REVALIDATE_AFTER below.
REVALIDATE_AFTER = 0.2
IDLE = 0.5


def _via(dsn: str, port: int) -> str:
    """``dsn`` with its host and port replaced by 127.0.0.1:``port``."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Setup:
    def __init__(self, admin: Any, proxy: TcpProxy, app: str, table: str) -> None:
        self.admin = admin
        self.proxy = proxy
        self.app = app
        self.table = table

    async def backends(self) -> list[tuple[int, Any]]:
        rows = await self.admin.fetch(
            "SELECT pid, backend_start FROM pg_stat_activity "
            "WHERE application_name = $1 ORDER BY pid",
            self.app,
        )
        return [(row["pid"], row["backend_start"]) for row in rows]

    async def terminate_backends(self) -> int:
        # pids first, then one call each: in a single WHERE clause the planner
        # may call pg_terminate_backend before it filters, on our own backend.
        killed = 0
        for pid, _ in await self.backends():
            killed += await self.admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        return killed


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[Setup]:
    host_port = urlsplit(pg_dsn)
    proxy = TcpProxy(host_port.hostname or "127.0.0.1", host_port.port or 5432)
    await proxy.start()
    admin = await asyncpg.connect(pg_dsn)
    tag = uuid.uuid4().hex[:12]
    setup = Setup(admin, proxy, f"statefulrt-test-{tag}", f"events_{tag}")
    try:
        yield setup
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {setup.table}")
        await admin.close()
        await proxy.close()


@asynccontextmanager
async def example(
    pg_dsn: str, pg: Setup, tmp_path: Path, *, revalidate: str
) -> AsyncIterator[Emulator]:
    env = {
        "STATEFULRT_PG_DSN": _via(pg_dsn, pg.proxy.port),
        "STATEFULRT_PG_TABLE": pg.table,
        "STATEFULRT_PG_APPLICATION_NAME": pg.app,
        "STATEFULRT_PG_REVALIDATE_AFTER": revalidate,
    }
    emu = Emulator(
        [sys.executable, "-m", "statefulrt", HANDLER],
        cwd=tmp_path,
        env=env,
        timeout=10.0,
        function_name="pg-example",
        report_stream=None,
        freeze=True,  # stopped between invocations, as on Lambda
    )
    async with emu:
        yield emu


async def test_postgres_warm_invocations_reuse_one_connection(
    pg_dsn: str, pg: Setup, tmp_path: Path
) -> None:
    async with example(pg_dsn, pg, tmp_path, revalidate="off") as emu:
        first = (await emu.invoke({"n": 0})).json()
        before = await pg.backends()
        warm = [(await emu.invoke({"n": n})).json() for n in range(1, 11)]
        after = await pg.backends()
        starts = emu.starts

    assert first == {"count": 1, "backend_pid": first["backend_pid"], "replaced": 0}
    assert [answer["count"] for answer in warm] == list(range(2, 12))
    assert {answer["backend_pid"] for answer in warm} == {first["backend_pid"]}
    # The server saw one connection, opened at init, and no other since.
    assert before == after
    assert [pid for pid, _ in after] == [first["backend_pid"]]
    assert pg.proxy.accepted == 1
    assert starts == 1


async def test_postgres_terminated_backends_are_replaced_after_idle(
    pg_dsn: str, pg: Setup, tmp_path: Path
) -> None:
    revalidate = str(REVALIDATE_AFTER)
    async with example(pg_dsn, pg, tmp_path, revalidate=revalidate) as emu:
        first = (await emu.invoke({"n": 1})).json()
        await emu.wait_idle()
        killed = await pg.terminate_backends()  # while the sandbox is frozen
        await emu.idle(IDLE)
        second = await emu.invoke({"n": 2})
        backends = await pg.backends()

    assert killed == 1
    assert second.function_error is None
    answer = second.json()
    assert answer["count"] == 2
    assert answer["backend_pid"] != first["backend_pid"]
    assert [pid for pid, _ in backends] == [answer["backend_pid"]]


@pytest.mark.parametrize("revalidate", [str(REVALIDATE_AFTER), "off"])
async def test_postgres_dropped_connections_after_idle(
    pg_dsn: str, pg: Setup, tmp_path: Path, revalidate: str
) -> None:
    async with example(pg_dsn, pg, tmp_path, revalidate=revalidate) as emu:
        first = (await emu.invoke({"n": 1})).json()
        await emu.wait_idle()
        dropped = pg.proxy.drop_all()  # while the sandbox is frozen
        await emu.idle(IDLE)
        second = await emu.invoke({"n": 2})
        third = await emu.invoke({"n": 3})

    assert dropped == 1
    if revalidate == "off":
        # Nothing checked the pool: the dead connection reached the handler.
        assert second.function_error == "Unhandled"
        assert second.json()["errorType"] == "ConnectionDoesNotExistError"
        # asyncpg discards a connection that failed, so the next one works
        assert third.json()["count"] == 2
        return

    assert second.function_error is None
    answer = second.json()
    assert (answer["count"], answer["replaced"]) == (2, 1)
    assert answer["backend_pid"] != first["backend_pid"]
    assert third.json()["count"] == 3
    assert pg.proxy.accepted == 2
