"""The journal: what a killed process leaves is replayed, and nothing more."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from runtime_api_fake import FakeRuntimeApi
from runtime_harness import running

from statefulrt import Context, Flush, FlushPolicy, State, StatefulHandler
from statefulrt._flush import Flusher
from statefulrt._journal import Journal


def _journaled_state(path: Path) -> State:
    return State(journal=Journal(str(path)))


def test_journal_replays_items_in_order(tmp_path: Path) -> None:
    path = tmp_path / "j"
    state = _journaled_state(path)
    for n in range(5):
        state.buffer("a" if n % 2 else "b").append({"n": n}, key=f"k{n}")
    assert state.journal is not None
    state.journal.sync()
    state.journal.close()

    replay = Journal(str(path)).replay()
    assert replay.epoch == 0
    assert [(name, item, key) for name, item, _, key in replay.items] == [
        ("b", {"n": 0}, "k0"),
        ("a", {"n": 1}, "k1"),
        ("b", {"n": 2}, "k2"),
        ("a", {"n": 3}, "k3"),
        ("b", {"n": 4}, "k4"),
    ]
    assert replay.skipped_bytes == 0


def test_journal_file_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "j"
    state = _journaled_state(path)
    state.buffer("a").append(b"x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("cut", [1, 5, 9, 12])
def test_journal_torn_last_record_is_skipped_and_truncated(
    tmp_path: Path, cut: int
) -> None:
    path = tmp_path / "j"
    state = _journaled_state(path)
    state.buffer("a").append(b"first")
    state.buffer("a").append(b"second-record")
    whole = path.read_bytes()
    path.write_bytes(whole[:-cut])  # the kill landed mid-write

    replay = Journal(str(path)).replay()
    assert [item for _, item, _, _ in replay.items] == [b"first"]
    assert replay.skipped_bytes == len(whole) - cut - replay_end(whole)
    assert path.stat().st_size == replay_end(whole)


def replay_end(whole: bytes) -> int:
    # the first record's end: header (9 bytes) + its payload length
    length = int.from_bytes(whole[:4], "big")
    return 9 + length


def test_journal_corrupt_checksum_stops_replay(tmp_path: Path) -> None:
    path = tmp_path / "j"
    state = _journaled_state(path)
    state.buffer("a").append(b"one")
    state.buffer("a").append(b"two")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    replay = Journal(str(path)).replay()
    assert [item for _, item, _, _ in replay.items] == [b"one"]


def test_journal_unpicklable_item_is_a_clear_error(tmp_path: Path) -> None:
    state = _journaled_state(tmp_path / "j")
    with pytest.raises(TypeError, match="items of a journal-mode handler must be"):
        state.buffer("a").append(lambda: None)
    assert len(state.buffer("a")) == 0


def test_journal_rejects_unknown_fsync_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync must be 'invocation', 'flush'"):
        Journal(str(tmp_path / "j"), fsync="sometimes")  # type: ignore[arg-type]


async def test_journal_compacts_on_flush_and_keeps_epoch(tmp_path: Path) -> None:
    path = tmp_path / "j"
    state = _journaled_state(path)
    written: list[tuple[str, list[Any]]] = []

    async def sink(batch: Flush) -> None:
        written.append((batch.name, batch.items("a")))

    flusher = Flusher(state, FlushPolicy(every=2), [sink])
    state.buffer("a").extend([1, 2])
    assert await flusher.flush() is True
    state.buffer("a").append(3, key="three")

    replay = Journal(str(path)).replay()
    assert replay.epoch == 1
    assert [item for _, item, _, _ in replay.items] == [3]
    assert written == [(f"0000000001-{flusher.writer}", [1, 2])]


async def test_journal_interrupted_flush_is_retried_with_same_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    state = _journaled_state(path)
    names: list[tuple[str, list[Any]]] = []

    async def crashes(batch: Flush) -> None:
        names.append((batch.name, batch.items("a")))
        raise OSError("killed mid-flush")

    flusher = Flusher(state, FlushPolicy(every=2), [crashes])
    state.buffer("a").extend(["x", "y"])
    assert await flusher.flush() is False
    state.buffer("a").append("z")  # arrives after the flush started

    # a new process: replay, then the same flush again
    state2 = _journaled_state(path)
    replay = Journal(str(path)).replay()
    state2._restore(replay)

    async def works(batch: Flush) -> None:
        names.append((batch.name, batch.items("a")))

    flusher2 = Flusher(state2, FlushPolicy(every=2), [works])
    flusher2.restore(replay)
    assert await flusher2.flush() is True
    assert await flusher2.flush() is True
    # the retry in the new process carries the interrupted flush's full name
    writer = flusher.writer
    assert flusher2.writer == writer
    assert names == [
        (f"0000000001-{writer}", ["x", "y"]),
        (f"0000000001-{writer}", ["x", "y"]),
        (f"0000000002-{writer}", ["z"]),
    ]


async def test_dedupe_keys_survive_flush_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "j"
    state = _journaled_state(path)

    async def sink(batch: Flush) -> None:
        return None

    flusher = Flusher(state, FlushPolicy(every=1), [sink])
    assert state.buffer("a").append("photo-1", key="s3://b/1") is True
    assert state.buffer("a").append("photo-1 again", key="s3://b/1") is False
    assert await flusher.flush() is True
    assert state.buffer("a").append("photo-1 late", key="s3://b/1") is False
    assert state.buffer("a").append("photo-2", key="s3://b/2") is True

    state2 = _journaled_state(path)
    state2._restore(Journal(str(path)).replay())
    assert state2.buffer("a").append("x", key="s3://b/1") is False
    assert state2.buffer("a").append("x", key="s3://b/2") is False
    assert state2.buffer("a").append("x", key="s3://b/3") is True


class JournalCounter(StatefulHandler):
    durability = "journal"
    flush_policy = FlushPolicy(every=1000)

    def __init__(self, sink: list[Any]) -> None:
        super().__init__()
        self.sink = sink

    async def handle(self, event: Any, context: Context) -> Any:
        self.state.buffer("events").append(event["n"])
        return len(self.state.buffer("events"))

    async def flush(self, batch: Flush) -> None:
        self.sink.extend(batch.items("events"))


async def test_runtime_journal_mode_replays_after_a_lost_process(
    api: FakeRuntimeApi, tmp_path: Path
) -> None:
    lost: list[Any] = []
    first = JournalCounter(lost)
    async with running(api, first, journal_dir=str(tmp_path)) as runtime:
        assert [(await api.answer(api.push({"n": n}))).json() for n in (1, 2, 3)] == [
            1,
            2,
            3,
        ]
        # the process "dies": nothing flushed, the journal stays behind
        assert runtime.flusher is not None
        runtime.flusher.policy = FlushPolicy(every=1000, on_shutdown=False)
    assert lost == []
    journal_files = sorted(p.name for p in tmp_path.iterdir())
    assert journal_files == [
        "statefulrt-test-JournalCounter.journal",
        "statefulrt-test-JournalCounter.journal.lock",
    ]

    sink: list[Any] = []
    second = JournalCounter(sink)
    async with running(api, second, journal_dir=str(tmp_path)):
        assert (await api.answer(api.push({"n": 4}))).json() == 4
    assert sink == [1, 2, 3, 4]  # the shutdown flush of the new process
    assert Journal(str(tmp_path / journal_files[0])).replay().items == []
