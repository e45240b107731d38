"""Expensive things kept open between warm invocations.

A resource is opened once during init, checked again when the sandbox wakes
up after a long freeze (a database may have dropped the connections of a
sandbox that sat frozen for minutes), reopened when that check fails, and
closed at shutdown.  Handlers reach their resources through ``self.resources``
or ``context.resources``, never through module globals.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, TypeVar, runtime_checkable

from ._diagnostic import describe
from ._exceptions import ResourceUnavailable
from ._log import runtime_logger

# A sandbox idle (frozen) longer than this has its resources validated before
# the next invocation reaches the handler.
REVALIDATE_AFTER = 5.0


@runtime_checkable
class Resource(Protocol):
    """What the runtime needs of a resource."""

    async def open(self) -> None: ...

    async def validate(self) -> bool:
        """True if the resource still works; False makes the runtime reopen it."""
        ...

    async def close(self) -> None: ...


R = TypeVar("R", bound=Resource)


class Resources:
    """The open resources of one handler, by name, in the order opened."""

    def __init__(self, revalidate_after: float = REVALIDATE_AFTER) -> None:
        self.revalidate_after = revalidate_after
        self._open: dict[str, Resource] = {}
        self._broken: set[str] = set()  # closed, and reopening them failed
        self._last_used = time.monotonic()
        self.reopened = 0

    async def open(self, name: str, resource: R) -> R:
        """Open ``resource`` and keep it under ``name``; returns it."""
        if name in self._open:
            raise ValueError(f"a resource named {name!r} is already open")
        if not isinstance(resource, Resource):
            raise TypeError(
                f"resource {name!r} must have async open(), validate() and close(), "
                f"not {type(resource).__name__}"
            )
        await resource.open()
        self._open[name] = resource
        return resource

    def __getitem__(self, name: str) -> Any:
        try:
            return self._open[name]
        except KeyError:
            raise KeyError(
                f"no resource named {name!r}; open it in init() with "
                f"'await self.resources.open({name!r}, ...)'"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._open

    def __len__(self) -> int:
        return len(self._open)

    def unsafe_for_snapshot(self) -> list[str]:
        """Resources marked ``snapshot_safe = False``, in the order opened."""
        return [
            name
            for name, resource in self._open.items()
            if not getattr(resource, "snapshot_safe", True)
        ]

    def idle_seconds(self, now: float | None = None) -> float:
        """Seconds since the last invocation ended (or since init)."""
        return (time.monotonic() if now is None else now) - self._last_used

    async def before_invoke(self, now: float | None = None) -> None:
        """Validate every resource if the sandbox sat idle for a while."""
        now = time.monotonic() if now is None else now
        idle = now - self._last_used
        self._last_used = now
        for name in sorted(self._broken):
            await self._reopen(name)
        if idle < self.revalidate_after:
            return
        for name, resource in self._open.items():
            try:
                healthy = await resource.validate()
            except Exception as exc:
                runtime_logger.warning(
                    "resource %s failed its check: %s", name, describe(exc)
                )
                healthy = False
            if healthy:
                continue
            runtime_logger.warning(
                "resource %s did not survive %.0f s idle; reopening it", name, idle
            )
            try:
                await resource.close()
            except Exception as exc:
                runtime_logger.debug("closing %s failed: %s", name, describe(exc))
            await self._reopen(name)

    async def _reopen(self, name: str) -> None:
        try:
            await self._open[name].open()
        except Exception as exc:
            # the invocation fails with a clear error; the next one tries again
            self._broken.add(name)
            raise ResourceUnavailable(
                f"resource {name!r} could not be reopened: "
                f"{type(exc).__name__}: {describe(exc)}"
            ) from exc
        self._broken.discard(name)
        self.reopened += 1

    def after_invoke(self, now: float | None = None) -> None:
        self._last_used = time.monotonic() if now is None else now

    async def close(self) -> None:
        """Close every resource, the last opened first."""
        for name in reversed(list(self._open)):
            resource = self._open.pop(name)
            try:
                await resource.close()
            except Exception as exc:
                runtime_logger.error("closing %s failed: %s", name, describe(exc))
