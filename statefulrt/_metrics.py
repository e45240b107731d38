"""Lifecycle measurements a handler can export (CloudWatch EMF, say).

The runtime reports to the handler's ``metrics`` object, when it has one:
invocations by kind (cold, warm, thawed after a long freeze), init duration,
each flush's duration and size or failure, and what waits for a flush after
every invocation.  Exporters live in plugins; the runtime only calls them.
"""

from __future__ import annotations

from typing import Literal, Protocol

InvocationKind = Literal["cold", "warm", "thawed"]


class LifecycleMetrics(Protocol):
    def init_done(self, duration_ms: float) -> None: ...

    def invocation(self, kind: InvocationKind) -> None: ...

    def flush_done(self, duration_ms: float, items: int, nbytes: int) -> None: ...

    def flush_failed(self) -> None: ...

    def boundary(self, pending_items: int, pending_bytes: int) -> None:
        """After each invocation's post-response work: publish what is due."""
        ...
