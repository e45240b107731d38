"""The companion extension flushes what a dead runtime left in its journal."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from statefulrt import State
from statefulrt._journal import Journal, journal_path
from statefulrt.companion import rescue_journal

HANDLER = """
import os
from statefulrt import StatefulHandler, FlushPolicy

class Rescued(StatefulHandler):
    durability = "journal"
    flush_policy = FlushPolicy(every=100)

    async def init(self):
        self.out = os.environ["RESCUE_OUT"]

    async def handle(self, event, context):
        self.state.buffer("events").append(event)
        return "ok"

    async def flush(self, batch):
        with open(self.out, "a") as out:
            out.write(f"{batch.name} {batch.items('events')}\\n")
"""


@pytest.fixture
def task_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "task"
    root.mkdir()
    (root / "rescue_app.py").write_text(textwrap.dedent(HANDLER))
    monkeypatch.setenv("RESCUE_OUT", str(tmp_path / "out.txt"))
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("rescue_app", None)
    return root


def _leave_journal(directory: Path, items: list[int]) -> str:
    path = journal_path(str(directory), "fn", "Rescued")
    state = State(journal=Journal(path))
    for item in items:
        state.buffer("events").append(item)
    assert state.journal is not None
    state.journal.close()
    return path


async def test_companion_rescues_a_left_journal(
    task_root: Path, tmp_path: Path
) -> None:
    path = _leave_journal(tmp_path, [1, 2, 3])
    flushed = await rescue_journal(
        "rescue_app.Rescued",
        task_root=str(task_root),
        journal_dir=str(tmp_path),
        function_name="fn",
    )
    assert flushed == 3
    line = (tmp_path / "out.txt").read_text()
    assert re.fullmatch(r"0000000001-[0-9a-f]{8} \[1, 2, 3\]\n", line)
    replay = Journal(path).replay()
    assert (replay.epoch, replay.items) == (1, [])


async def test_companion_leaves_an_empty_journal_alone(
    task_root: Path, tmp_path: Path
) -> None:
    _leave_journal(tmp_path, [])
    flushed = await rescue_journal(
        "rescue_app.Rescued",
        task_root=str(task_root),
        journal_dir=str(tmp_path),
        function_name="fn",
    )
    assert flushed == 0
    assert not (tmp_path / "out.txt").exists()


async def test_companion_waits_for_a_live_runtime(
    task_root: Path, tmp_path: Path
) -> None:
    path = _leave_journal(tmp_path, [7])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({path + '.lock'!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        flushed = await rescue_journal(
            "rescue_app.Rescued",
            task_root=str(task_root),
            journal_dir=str(tmp_path),
            function_name="fn",
            wait=0.2,
        )
    finally:
        holder.kill()
        holder.communicate()
    assert flushed == 0
    assert [item for _, item, _, _ in Journal(path).replay().items] == [7]
