"""Shutdown end to end: SIGTERM, the function's own handler, the companion."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

from statefulrt.emulator import Emulator

APP = """
import os, signal
from statefulrt import StatefulHandler, FlushPolicy

OUT = os.environ["SHUTDOWN_OUT"]

def _note(text):
    with open(OUT, "a") as out:
        out.write(text + "\\n")

# installed by the function at import time, as plenty of functions do
signal.signal(signal.SIGTERM, lambda signum, frame: _note("user handler"))

class Journaled(StatefulHandler):
    durability = "journal"
    flush_policy = FlushPolicy(every=1000)

    async def handle(self, event, context):
        self.state.buffer("events").append(event["n"])
        if event.get("hang"):
            import time
            time.sleep(30)
        return event["n"]

    async def flush(self, batch):
        _note(f"flush {batch.reason} {batch.items('events')}")

    async def close(self):
        _note("close")
"""

COMPANION = """#!/bin/sh
exec {python} -m statefulrt.companion --name "$(basename "$0")"
"""


def _app(tmp_path: Path) -> Path:
    task = tmp_path / "task"
    task.mkdir()
    (task / "shutdown_app.py").write_text(textwrap.dedent(APP))
    return task


async def test_shutdown_sigterm_flushes_and_runs_the_functions_handler(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.txt"
    emu = Emulator(
        [sys.executable, "-m", "statefulrt", "shutdown_app.Journaled"],
        cwd=_app(tmp_path),
        env={"SHUTDOWN_OUT": str(out)},
        report_stream=None,
    )
    async with emu:
        for n in range(3):
            assert (await emu.invoke({"n": n})).function_error is None
        await emu.shutdown(budget_ms=300)
        shutdowns = emu.shutdowns

    assert shutdowns == [("spindown", "SIGTERM", 0)]
    assert out.read_text().splitlines() == [
        "user handler",
        "flush shutdown [0, 1, 2]",
        "close",
    ]


async def test_shutdown_companion_rescues_the_journal_after_a_timeout(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.txt"
    extensions = tmp_path / "extensions"
    extensions.mkdir()
    companion = extensions / "statefulrt-companion"
    companion.write_text(COMPANION.format(python=sys.executable))
    companion.chmod(0o755)
    task = _app(tmp_path)
    emu = Emulator(
        [sys.executable, "-m", "statefulrt", "shutdown_app.Journaled"],
        cwd=task,
        timeout=1.0,
        extensions_dir=extensions,
        env={
            "SHUTDOWN_OUT": str(out),
            "STATEFULRT_HANDLER": "shutdown_app.Journaled",
            "STATEFULRT_TASK_ROOT": str(task),
            "PYTHONPATH": os.pathsep.join(sys.path),
        },
        report_stream=None,
    )
    async with emu:
        for n in range(2):
            assert (await emu.invoke({"n": n})).function_error is None
        timed_out = await emu.invoke({"n": 2, "hang": True})
        await emu.wait_idle()
        for _ in range(100):  # the reset's shutdown phase runs after the answer
            if out.exists():
                break
            await asyncio.sleep(0.05)
        lines = out.read_text().splitlines()
        shutdowns = emu.shutdowns

    assert timed_out.json()["errorType"] == "Sandbox.Timedout"
    assert shutdowns[0][0] == "timeout"
    # the runtime died with three journaled events; the companion flushed them
    assert "flush shutdown [0, 1, 2]" in lines
