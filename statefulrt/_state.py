"""The in-memory state store that lives as long as the process.

A ``State`` holds named buffers (items waiting to be flushed), counters and
plain values.  Buffers are transactional: a flush *claims* the items it takes,
and they leave the buffer only when every flush hook succeeded.  A failed flush
keeps its claim, so the retry sees exactly the same items under the same epoch,
while items appended meanwhile wait for the next flush.

Items may carry a de-duplication key (a Lambda retry or a second S3
notification for the same object): an item whose key is pending, or was
flushed recently, is not buffered again.

The store is not locked: all access happens on the runtime's event loop, where
code between two ``await`` points runs alone.  Handlers running in worker
threads (plain ``def`` functions) must not touch it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ._journal import Journal, Replay

# How many flushed keys are remembered for de-duplication.
RECENT_KEYS = 10_000


class Buffer:
    """Items waiting for a flush, with their sizes and arrival times."""

    __slots__ = (
        "name",
        "_state",
        "_items",
        "_sizes",
        "_times",
        "_keys",
        "_nbytes",
        "_claimed",
    )

    def __init__(self, name: str, state: State) -> None:
        self.name = name
        self._state = state
        self._items: list[Any] = []
        self._sizes: list[int] = []
        self._times: list[float] = []
        self._keys: list[str | None] = []
        self._nbytes = 0
        self._claimed = 0

    def append(
        self, item: Any, *, size: int | None = None, key: str | None = None
    ) -> bool:
        """Buffer ``item``; returns False if ``key`` was already seen.

        ``size`` (bytes) defaults to a measured estimate.  ``key`` makes the
        append idempotent across the buffer, the journal and recent flushes.
        In a journal-mode handler the item is journaled before this returns.
        """
        if size is None:
            size = measure(item)
        elif size < 0:
            raise ValueError(f"size must be a byte count >= 0, not {size!r}")
        if key is not None and self._state.seen(key):
            return False
        journal = self._state.journal
        if journal is not None:
            journal.append_item(self.name, item, size, key)
        self._add(item, size, key)
        return True

    def _add(self, item: Any, size: int, key: str | None) -> None:
        self._items.append(item)
        self._sizes.append(size)
        self._times.append(time.monotonic())
        self._keys.append(key)
        self._nbytes += size
        if key is not None:
            self._state._pending_keys.add(key)

    def extend(self, items: list[Any]) -> None:
        for item in items:
            self.append(item)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    @property
    def nbytes(self) -> int:
        """Bytes pending in this buffer, claimed ones included."""
        return self._nbytes

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest pending item arrived, or None if empty."""
        if not self._times:
            return None
        return (time.monotonic() if now is None else now) - self._times[0]

    def peek(self) -> list[Any]:
        """A copy of the pending items, oldest first."""
        return list(self._items)

    # -- flush transaction (used by the flusher) --------------------------------

    def _claim(self) -> list[Any]:
        if self._claimed == 0:
            self._claimed = len(self._items)
        return self._items[: self._claimed]

    def _claimed_bytes(self) -> int:
        return sum(self._sizes[: self._claimed])

    def _commit(self) -> None:
        count = self._claimed
        for key in self._keys[:count]:
            if key is not None:
                self._state._remember(key)
        self._nbytes -= sum(self._sizes[:count])
        del self._items[:count]
        del self._sizes[:count]
        del self._times[:count]
        del self._keys[:count]
        self._claimed = 0

    def _entries(self) -> list[tuple[str, Any, int, str | None]]:
        return [
            (self.name, item, size, key)
            for item, size, key in zip(
                self._items, self._sizes, self._keys, strict=True
            )
        ]


class Counter:
    """A named integer that survives between warm invocations."""

    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def incr(self, amount: int = 1) -> int:
        self.value += amount
        return self.value


class State:
    """Named buffers, counters and values kept alive between invocations."""

    def __init__(self, *, journal: Journal | None = None) -> None:
        self.journal = journal
        self._buffers: dict[str, Buffer] = {}
        self._counters: dict[str, Counter] = {}
        self._values: dict[str, Any] = {}
        self._pending_keys: set[str] = set()
        self._recent_keys: OrderedDict[str, None] = OrderedDict()

    def buffer(self, name: str) -> Buffer:
        """The buffer called ``name``, created empty on first use."""
        found = self._buffers.get(name)
        if found is None:
            found = self._buffers[name] = Buffer(name, self)
        return found

    def seen(self, key: str) -> bool:
        """Whether an item with ``key`` is pending or was flushed recently."""
        return key in self._pending_keys or key in self._recent_keys

    def _remember(self, key: str) -> None:
        self._pending_keys.discard(key)
        self._recent_keys[key] = None
        self._recent_keys.move_to_end(key)
        while len(self._recent_keys) > RECENT_KEYS:
            self._recent_keys.popitem(last=False)

    def _entries(self) -> list[tuple[str, Any, int, str | None]]:
        return [entry for b in self._buffers.values() for entry in b._entries()]

    def _recent(self) -> list[str]:
        return list(self._recent_keys)

    def _restore(self, replay: Replay) -> None:
        """Load what a journal held (without journaling it again)."""
        for flushed in replay.recent_keys:
            self._recent_keys[flushed] = None
        for name, item, size, key in replay.items:
            self.buffer(name)._add(item, size, key)

    def counter(self, name: str) -> Counter:
        found = self._counters.get(name)
        if found is None:
            found = self._counters[name] = Counter(name)
        return found

    @property
    def buffers(self) -> dict[str, Buffer]:
        return dict(self._buffers)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def setdefault(self, key: str, default: Any) -> Any:
        return self._values.setdefault(key, default)

    @property
    def pending_items(self) -> int:
        return sum(len(buffer) for buffer in self._buffers.values())

    @property
    def pending_bytes(self) -> int:
        return sum(buffer.nbytes for buffer in self._buffers.values())

    def oldest_age(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        ages = [
            age
            for buffer in self._buffers.values()
            if (age := buffer.oldest_age(now)) is not None
        ]
        return max(ages) if ages else None


def measure(item: Any) -> int:
    """Bytes an item stands for: its length for bytes and text, else its JSON."""
    if isinstance(item, bytes | bytearray | memoryview):
        return len(item)
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))
    try:
        return len(orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        # not JSON-able: count it as one small object rather than refuse it
        return 64
