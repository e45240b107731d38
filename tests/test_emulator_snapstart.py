"""SnapStart in the emulator: the restore routes, the hooks, the REPORT line.

statefulrt's real runtime runs the hooks (a ``StatefulHandler`` appending to a
file); where the exact Runtime API answers are under test, the test plays the
runtime over HTTP.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from statefulrt.emulator import Emulator, Report

APP = """
import os
from statefulrt import StatefulHandler

def note(step):
    with open(os.environ["HOOK_LOG"], "a") as out:
        out.write(step + "\\n")

class Snappy(StatefulHandler):
    async def init(self):
        note("init")

    async def before_snapshot(self):
        note("before_snapshot")
        if os.environ.get("FAIL") == "before":
            raise RuntimeError("cannot quiesce")

    async def after_restore(self):
        note("after_restore")
        if os.environ.get("FAIL") == "after":
            raise RuntimeError("cannot reconnect")

    async def handle(self, event, context):
        note("handle")
        return {"init_type": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}
"""

SLEEPER = "import time\ntime.sleep(60)\n"
BASE = "/2018-06-01/runtime"


@asynccontextmanager
async def running(tmp_path: Path, fail: str = "") -> AsyncIterator[Emulator]:
    (tmp_path / "app.py").write_text(APP)
    env = {"HOOK_LOG": str(tmp_path / "hooks.log"), "FAIL": fail}
    command = [sys.executable, "-m", "statefulrt", "app.Snappy"]
    async with Emulator(
        command, cwd=tmp_path, env=env, snap_start=True, report_stream=None
    ) as emu:
        yield emu


@asynccontextmanager
async def played(tmp_path: Path, **options: Any) -> AsyncIterator[Emulator]:
    (tmp_path / "runtime.py").write_text(SLEEPER)
    command = [sys.executable, "runtime.py"]
    async with Emulator(command, cwd=tmp_path, report_stream=None, **options) as emu:
        yield emu


def hooks(tmp_path: Path) -> list[str]:
    return (tmp_path / "hooks.log").read_text().split()


async def call(
    session: aiohttp.ClientSession, emu: Emulator, method: str, path: str, **kw: Any
) -> tuple[int, bytes]:
    async with asyncio.timeout(10):
        url = f"http://{emu.runtime_api}{path}"
        async with session.request(method, url, **kw) as response:
            return response.status, await response.read()


def rapid_error(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorMessage": message, "errorType": error_type}) + b"\n"


# -- statefulrt's runtime -----------------------------------------------------


async def test_snap_start_runs_the_hooks_in_order_and_reports_the_restore(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as emu:
        first = await emu.invoke({})
        second = await emu.invoke({})
        await emu.wait_idle()

    assert hooks(tmp_path) == [
        "init",
        "before_snapshot",
        "after_restore",
        "handle",
        "handle",
    ]
    assert first.json() == second.json() == {"init_type": "snap-start"}
    restored, warm = emu.reports
    assert (restored.init_duration_ms, restored.status) == (None, "success")
    assert restored.restore_duration_ms is not None
    assert restored.billed_restore_duration_ms is not None
    assert "\tRestore Duration: " in restored.line()
    assert "Init Duration" not in restored.line()
    assert (warm.restore_duration_ms, warm.init_duration_ms) == (None, None)


async def test_after_restore_failure_fails_the_invoke_and_ends_the_runtime(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, fail="after") as emu:
        result = await emu.invoke({})
        await emu.wait_idle()

    assert hooks(tmp_path) == ["init", "before_snapshot", "after_restore"]
    assert result.function_error == "Unhandled"
    error = result.json()
    assert (error["errorType"], error["errorMessage"]) == (
        "Runtime.AfterRestoreError",
        "cannot reconnect",
    )
    # awslambdaric's exit code for a failed after-restore hook.
    assert emu.shutdowns == [("failure", None, 65)]
    [report] = emu.reports
    assert (report.status, report.error_type) == ("error", "Runtime.AfterRestoreError")


async def test_before_snapshot_failure_is_an_init_error(tmp_path: Path) -> None:
    async with running(tmp_path, fail="before") as emu:
        result = await emu.invoke({})
        await emu.wait_idle()

    assert hooks(tmp_path) == ["init", "before_snapshot"]
    error = result.json()
    assert (error["errorType"], error["errorMessage"]) == (
        "Runtime.BeforeSnapshotError",
        "cannot quiesce",
    )
    assert emu.shutdowns == [("failure", None, 64)]
    # No restore happened: the REPORT shows the init that failed.
    [report] = emu.reports
    assert (report.restore_duration_ms, report.init_duration_ms is not None) == (
        None,
        True,
    )


# -- the restore routes, played -----------------------------------------------


async def test_restore_routes_exist_only_under_snap_start(tmp_path: Path) -> None:
    async with played(tmp_path) as emu, aiohttp.ClientSession() as session:
        missing = [
            await call(session, emu, "GET", f"{BASE}/restore/next"),
            await call(session, emu, "POST", f"{BASE}/restore/error", data=b"{}"),
        ]

    assert missing == [(404, b"404 page not found\n")] * 2


async def test_restore_next_returns_after_init_and_restore_error_fails_the_invoke(
    tmp_path: Path,
) -> None:
    error = b'{"errorMessage":"no db","errorType":"Runtime.AfterRestoreError"}'
    header = {"Lambda-Runtime-Function-Error-Type": "Runtime.AfterRestoreError"}
    async with (
        played(tmp_path, snap_start=True) as emu,
        aiohttp.ClientSession() as session,
    ):
        early = await call(session, emu, "POST", f"{BASE}/restore/error", data=error)
        invoke = asyncio.create_task(emu.invoke({}))
        restored = await call(session, emu, "GET", f"{BASE}/restore/next")
        again = await call(session, emu, "GET", f"{BASE}/restore/next")
        failed = await call(
            session, emu, "POST", f"{BASE}/restore/error", data=error, headers=header
        )
        async with asyncio.timeout(10):
            result = await invoke

    assert early == (
        403,
        rapid_error(
            "InvalidStateTransition",
            "State transition from Started to RuntimeRestoreErrorState failed for "
            "runtime. Error: State transition is not allowed",
        ),
    )
    assert restored == (200, b"")
    assert again == (
        403,
        rapid_error(
            "InvalidStateTransition",
            "State transition from Restoring to RestoreReady failed for runtime. "
            "Error: State transition is not allowed",
        ),
    )
    assert failed == (202, b'{"status":"OK"}\n')
    assert (result.function_error, result.payload) == ("Unhandled", error)


def test_report_line_shows_the_restore_instead_of_init() -> None:
    report = Report.build(
        "abc",
        duration_ms=1.5,
        memory_size_mb=128,
        max_memory_used_mb=30,
        init_duration_ms=None,
        restore_duration_ms=474.164,
        status="success",
    )

    assert report.line() == (
        "REPORT RequestId: abc\tDuration: 1.50 ms\tBilled Duration: 2 ms\t"
        "Memory Size: 128 MB\tMax Memory Used: 30 MB\t"
        "Restore Duration: 474.16 ms\tBilled Restore Duration: 475 ms"
    )
