"""Nothing grows with the number of warm invocations."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from statefulrt.emulator import Emulator

APP = """
import asyncio, gc, os, threading
from statefulrt import StatefulHandler, FlushPolicy, flush_hook

def _gauges(handler):
    gc.collect()
    with open("/proc/self/status") as status:
        rss_kb = next(int(l.split()[1]) for l in status if l.startswith("VmRSS"))
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tasks": len(asyncio.all_tasks()),
        "hooks": len(handler.flush_hooks()),
        "buffers": len(handler.state.buffers),
        "rss_kb": rss_kb,
    }

class Churn(StatefulHandler):
    durability = "journal"
    flush_policy = FlushPolicy(every=50)

    async def handle(self, event, context):
        self.state.buffer("events").append(event["n"], key=str(event["n"]))
        if event.get("gauges"):
            return _gauges(self)
        return None

    async def flush(self, batch):
        await asyncio.sleep(0)

    @flush_hook
    async def also(self, batch):
        return None
"""

WARM = 10_000


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_leaks_flat_after_10000_warm_invocations(tmp_path: Path) -> None:
    (tmp_path / "leaky.py").write_text(textwrap.dedent(APP))
    emu = Emulator(
        [sys.executable, "-m", "statefulrt", "leaky.Churn"],
        cwd=tmp_path,
        timeout=10,
        report_stream=None,
        env={"STATEFULRT_JOURNAL_DIR": str(tmp_path)},
    )
    async with emu:
        for n in range(200):  # warm-up: imports, first flushes, allocator pools
            await emu.invoke({"n": n})
        before = (await emu.invoke({"n": 200, "gauges": True})).json()
        for n in range(201, 201 + WARM):
            result = await emu.invoke({"n": n})
            assert result.function_error is None
        after = (await emu.invoke({"n": 201 + WARM, "gauges": True})).json()

    print(f"\nbefore {before}\nafter  {after}")
    for gauge in ("fds", "threads", "tasks", "hooks", "buffers"):
        assert after[gauge] == before[gauge], gauge
    # the de-duplication memory is bounded at 10,000 keys, a few MB at most
    assert after["rss_kb"] - before["rss_kb"] < 8 * 1024
