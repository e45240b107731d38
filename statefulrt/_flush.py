"""When buffered data is flushed, and how a flush stays all-or-nothing.

Lambda freezes the sandbox as soon as the runtime asks for the next event, so
no timer can fire between invocations: every policy is evaluated at
invocation boundaries, after the response has been posted, where the work is
billed but the caller no longer waits.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._diagnostic import describe
from ._log import flush_logger
from ._state import State

if TYPE_CHECKING:
    from ._journal import Replay
    from ._metrics import LifecycleMetrics

FlushReason = Literal["items", "bytes", "age", "shutdown", "manual", "sync", "replay"]
FlushHook = Callable[["Flush"], Awaitable[None]]

# Retry backoff after a failed flush: first retry after this many seconds,
# doubling up to the cap.
RETRY_FIRST_DELAY = 0.1
RETRY_MAX_DELAY = 30.0


@dataclass(frozen=True, kw_only=True)
class FlushPolicy:
    """What makes buffered data due for a flush.

    ``every``      flush once this many items are pending (across buffers)
    ``max_bytes``  flush once this many bytes are pending
    ``max_age``    flush once the oldest pending item is this many seconds old
                   (checked at invocation boundaries; a frozen sandbox runs no
                   timers)
    ``on_shutdown`` flush what is left when the runtime shuts down
    """

    every: int | None = None
    max_bytes: int | None = None
    max_age: float | None = None
    on_shutdown: bool = True

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValueError(f"FlushPolicy every must be >= 1 item, not {self.every!r}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(
                f"FlushPolicy max_bytes must be >= 1 byte, not {self.max_bytes!r}"
            )
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(
                f"FlushPolicy max_age must be > 0 seconds, not {self.max_age!r}"
            )

    def due(self, state: State, now: float | None = None) -> FlushReason | None:
        """The reason a flush is due now, or None."""
        if self.every is not None and state.pending_items >= self.every:
            return "items"
        if self.max_bytes is not None and state.pending_bytes >= self.max_bytes:
            return "bytes"
        if self.max_age is not None:
            age = state.oldest_age(now)
            if age is not None and age >= self.max_age:
                return "age"
        return None


class Flush:
    """One flush: the items it took from each buffer, under a fixed epoch.

    ``epoch`` counts successful flushes from 1.  ``name`` joins it to the
    writer, a random id of the state being flushed (kept in its journal), so a
    retry of a failed flush carries the same epoch, name and items — also in
    the process that replays a journal — while flushes of other sandboxes and
    other tenants never share a name.  A sink can use it as an idempotency key.
    """

    __slots__ = (
        "epoch",
        "reason",
        "attempt",
        "nbytes",
        "tenant_id",
        "writer",
        "_batches",
    )

    def __init__(
        self,
        epoch: int,
        reason: FlushReason,
        batches: dict[str, list[Any]],
        nbytes: int = 0,
        writer: str = "",
    ) -> None:
        self.epoch = epoch
        self.writer = writer
        self.reason: FlushReason = reason
        self.attempt = 1
        self.nbytes = nbytes
        self.tenant_id: str | None = None
        self._batches = batches

    @property
    def name(self) -> str:
        return (
            f"{self.epoch:010d}-{self.writer}" if self.writer else f"{self.epoch:010d}"
        )

    def items(self, buffer: str) -> list[Any]:
        """The items this flush took from ``buffer`` (empty if none)."""
        return list(self._batches.get(buffer, ()))

    @property
    def buffers(self) -> dict[str, list[Any]]:
        return {name: list(items) for name, items in self._batches.items()}

    def __len__(self) -> int:
        return sum(len(items) for items in self._batches.values())

    def __repr__(self) -> str:
        return (
            f"Flush(epoch={self.epoch}, reason={self.reason!r}, items={len(self)}, "
            f"attempt={self.attempt})"
        )


class Flusher:
    """Runs the flush hooks of one handler over its state, transactionally."""

    def __init__(
        self, state: State, policy: FlushPolicy, hooks: Sequence[FlushHook]
    ) -> None:
        self.state = state
        self.policy = policy
        self.hooks = list(hooks)
        self.epoch = 0  # last successful flush
        self.failures = 0  # consecutive failed attempts
        self._pending: Flush | None = None  # a failed flush waiting for its retry
        self._retry_at = 0.0
        # how long the last successful flush took: the cost of the next one
        self.estimate = 0.0
        self.deferred = 0
        self.metrics: LifecycleMetrics | None = None
        self.tenant_id: str | None = None
        self.writer = os.urandom(4).hex()

    @property
    def retry_pending(self) -> bool:
        return self._pending is not None

    async def at_boundary(
        self, now: float | None = None, budget: float | None = None
    ) -> bool | None:
        """Flush if the policy says so (or a failed flush is due for retry).

        ``budget`` is the time left before the invocation's deadline, minus a
        margin: a flush expected to outlast it is deferred to a later
        boundary rather than started and killed by the timeout.  Returns None
        when nothing ran, else whether the flush succeeded.
        """
        now = time.monotonic() if now is None else now
        reason: FlushReason | None
        if self._pending is not None:
            if now < self._retry_at:
                return None
            reason = self._pending.reason
        else:
            reason = self.policy.due(self.state, now)
            if reason is None:
                return None
        if budget is not None and self.estimate > budget:
            self.deferred += 1
            flush_logger.warning(
                "flush deferred: it took %.0f ms last time and only %.0f ms remain "
                "before the deadline",
                self.estimate * 1000,
                max(budget, 0) * 1000,
            )
            return None
        if self._pending is not None:
            # only the failed batch: what came later waits for its own turn
            return await self._run(self._pending)
        return await self.flush(reason)

    async def flush(self, reason: FlushReason = "manual") -> bool:
        """Flush everything pending now; True when it succeeded (or was empty).

        A failed flush waiting for its retry goes first, under its own epoch;
        what arrived after it follows as the next epoch.
        """
        while True:
            batch = self._pending or self._claim(reason)
            if batch is None:
                return True
            if not await self._run(batch):
                return False

    def restore(self, replay: Replay) -> None:
        """Continue from a journal: its epoch, and a flush it had started."""
        self.epoch = replay.epoch
        if replay.writer is not None:
            self.writer = replay.writer
        if replay.claim is None:
            return
        epoch, counts, writer = replay.claim
        batches: dict[str, list[Any]] = {}
        for name, count in counts.items():
            buffer = self.state.buffer(name)
            buffer._claimed = min(count, len(buffer))
            batches[name] = buffer._claim()
        # the interrupted flush is retried first, with the same name and items,
        # so a sink that saw it land already can recognise it
        self._pending = Flush(epoch, "replay", batches, writer=writer)

    def _claim(self, reason: FlushReason) -> Flush | None:
        batches = {
            name: buffer._claim()
            for name, buffer in self.state.buffers.items()
            if len(buffer)
        }
        if not batches:
            return None
        nbytes = sum(self.state.buffer(name)._claimed_bytes() for name in batches)
        batch = Flush(self.epoch + 1, reason, batches, nbytes, self.writer)
        journal = self.state.journal
        if journal is not None:
            counts = {name: len(items) for name, items in batches.items()}
            journal.append_claim(batch.epoch, counts, self.writer)
        return batch

    async def _run(self, batch: Flush) -> bool:
        batch.tenant_id = self.tenant_id
        started = time.perf_counter()
        try:
            for hook in self.hooks:
                await hook(batch)
        except BaseException as exc:
            # a hook calling sys.exit() fails this flush, not the runtime
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._pending = batch
            self.failures += 1
            delay = min(RETRY_FIRST_DELAY * 2 ** (self.failures - 1), RETRY_MAX_DELAY)
            self._retry_at = time.monotonic() + delay
            flush_logger.error(
                "flush %s (%s, %d items, attempt %d) failed: %s: %s; "
                "its items stay buffered, retry in %.1f s",
                batch.name,
                batch.reason,
                len(batch),
                batch.attempt,
                type(exc).__name__,
                describe(exc),
                delay,
                exc_info=exc,
            )
            batch.attempt += 1
            if self.metrics is not None:
                self.metrics.flush_failed()
            return False

        for name in batch.buffers:
            self.state.buffer(name)._commit()
        journal = self.state.journal
        if journal is not None:
            journal.compact(
                batch.epoch, self.state._entries(), self.state._recent(), self.writer
            )
        self.epoch = batch.epoch
        self.failures = 0
        self._pending = None
        self.estimate = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.flush_done(self.estimate * 1000, len(batch), batch.nbytes)
        flush_logger.info(
            "flush %s written (%s, %d items) in %.1f ms",
            batch.name,
            batch.reason,
            len(batch),
            self.estimate * 1000,
        )
        return True
