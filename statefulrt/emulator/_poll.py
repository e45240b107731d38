"""A long poll the emulator holds open until it has something to hand out.

Both ``GET /runtime/invocation/next`` and ``GET /extension/event/next`` block
until the platform has an event for the caller. A ``Poll`` is one such request
in flight: a future the request handler awaits, and the transport it came in
on, so a poll whose client has gone (killed, or hung up) is told apart from one
still waiting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Poll"]

T = TypeVar("T")


@dataclass(eq=False)
class Poll(Generic[T]):
    """A request waiting for a value; ``None`` tells it to give up."""

    future: asyncio.Future[T | None]
    transport: asyncio.BaseTransport | None

    @classmethod
    def open(cls, transport: asyncio.BaseTransport | None) -> Poll[T]:
        future: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        return cls(future, transport)

    @property
    def stale(self) -> bool:
        # The client that sent it is gone even if its handler has not been
        # cancelled yet.
        return self.transport is None or self.transport.is_closing()

    @property
    def live(self) -> bool:
        return not self.future.done() and not self.stale

    def deliver(self, value: T) -> None:
        self.future.set_result(value)

    def release(self) -> None:
        if not self.future.done():
            self.future.set_result(None)
