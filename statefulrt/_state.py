"""The in-memory state store that lives as long as the process.

A ``State`` holds named buffers (items waiting to be flushed), counters and
plain values.  Buffers are transactional: a flush *claims* the items it takes,
and they leave the buffer only when every flush hook succeeded.  A failed flush
keeps its claim, so the retry sees exactly the same items under the same epoch,
while items appended meanwhile wait for the next flush.

The store is not locked: all access happens on the runtime's event loop, where
code between two ``await`` points runs alone.  Handlers running in worker
threads (plain ``def`` functions) must not touch it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson


class Buffer:
    """Items waiting for a flush, with their sizes and arrival times."""

    __slots__ = ("name", "_items", "_sizes", "_times", "_nbytes", "_claimed")

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: list[Any] = []
        self._sizes: list[int] = []
        self._times: list[float] = []
        self._nbytes = 0
        self._claimed = 0

    def append(self, item: Any, *, size: int | None = None) -> None:
        """Buffer ``item``; ``size`` (bytes) defaults to a measured estimate."""
        if size is None:
            size = measure(item)
        elif size < 0:
            raise ValueError(f"size must be a byte count >= 0, not {size!r}")
        self._items.append(item)
        self._sizes.append(size)
        self._times.append(time.monotonic())
        self._nbytes += size

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

    def _commit(self) -> None:
        count = self._claimed
        self._nbytes -= sum(self._sizes[:count])
        del self._items[:count]
        del self._sizes[:count]
        del self._times[:count]
        self._claimed = 0


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

    def __init__(self) -> None:
        self._buffers: dict[str, Buffer] = {}
        self._counters: dict[str, Counter] = {}
        self._values: dict[str, Any] = {}

    def buffer(self, name: str) -> Buffer:
        """The buffer called ``name``, created empty on first use."""
        found = self._buffers.get(name)
        if found is None:
            found = self._buffers[name] = Buffer(name)
        return found

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
