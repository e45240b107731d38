"""The two ways to write a handler, and the adapter the runtime calls them by.

A plain function ``handler(event, context)`` (``def`` or ``async def``) runs
unchanged, as under awslambdaric.  A ``StatefulHandler`` subclass is
instantiated once per process and gets init, flush and close hooks, a flush
policy and ``self.state``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ._flush import Flush, FlushHook, FlushPolicy
from ._invocation import Context
from ._resources import Resources
from ._state import State

if TYPE_CHECKING:
    from ._journal import FsyncPolicy
    from ._metrics import LifecycleMetrics

Durability = Literal["memory", "journal", "sync"]

# The state of the tenant whose invocation (or flush) is running, when the
# function serves tenants; StatefulHandler.state reads it.
active_state: ContextVar[State | None] = ContextVar(
    "statefulrt_active_state", default=None
)
_HOOK_MARK = "__statefulrt_flush_hook__"

F = TypeVar("F", bound=Callable[..., Awaitable[None]])


def flush_hook(method: F) -> F:
    """Mark a ``StatefulHandler`` coroutine method as a flush hook.

    Hooks run after ``flush()``, in the order they are defined (base classes
    first), and take the same ``Flush``.  If any raises, the flush fails as a
    whole and its items stay buffered for a retry.
    """
    candidate: object = method  # checked without narrowing F
    if not inspect.iscoroutinefunction(candidate):
        raise TypeError(f"@flush_hook needs an 'async def' method, not {method!r}")
    setattr(method, _HOOK_MARK, True)
    return method


class StatefulHandler:
    """Base class for handlers that keep state between warm invocations.

    Subclass it and override ``handle``; optionally ``init`` (open pools,
    encoders, clients), ``flush`` (write what the buffers hold) and ``close``.
    Class attributes choose the flush policy and the durability level::

        class Events(StatefulHandler):
            flush_policy = FlushPolicy(every=100, max_age=60)

            async def handle(self, event, context):
                self.state.buffer("events").append(event)
                return {"queued": len(self.state.buffer("events"))}

            async def flush(self, batch):
                await write_somewhere(batch.name, batch.items("events"))
    """

    #: may also be set per instance, in __init__ or init()
    flush_policy: FlushPolicy = FlushPolicy()
    #: what an answered invocation promises about the data it buffered:
    #: "memory" (lost on a crash), "journal" (appended to a journal under the
    #: temporary directory before the answer; replayed by the next init) or
    #: "sync" (the flush covering it completed before the answer)
    durability: ClassVar[Durability] = "memory"
    #: when the journal reaches the disk (see ``Journal``)
    journal_fsync: ClassVar[FsyncPolicy] = "invocation"
    #: refuse new invocations while this much data waits for a flush; None
    #: means a quarter of the function's memory (bytes) and no item cap
    max_pending_bytes: ClassVar[int | None] = None
    max_pending_items: ClassVar[int | None] = None
    _flush_hook_names: ClassVar[tuple[str, ...]] = ()

    resources: Resources
    #: set in init() to export lifecycle metrics (see the metrics plugin)
    metrics: LifecycleMetrics | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.flush_policy, FlushPolicy):
            raise TypeError(
                f"{cls.__name__}.flush_policy must be a FlushPolicy, "
                f"not {cls.flush_policy!r}"
            )
        if cls.durability not in ("memory", "journal", "sync"):
            raise ValueError(
                f"{cls.__name__}.durability must be 'memory', 'journal' or 'sync', "
                f"not {cls.durability!r}"
            )
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                if getattr(member, _HOOK_MARK, False) and name not in names:
                    names.append(name)
        cls._flush_hook_names = tuple(names)

    def __init__(self) -> None:
        self._home_state = State()
        self.resources = Resources()

    @property
    def state(self) -> State:
        """The state of the tenant being served (the one state without tenants).

        Each tenant id gets its own buffers, counters and values: one tenant's
        data never reaches another tenant's invocation or flush.
        """
        current = active_state.get()
        return current if current is not None else self._home_state

    @state.setter
    def state(self, value: State) -> None:
        self._home_state = value

    async def init(self) -> None:
        """Runs once per process, before the first invocation."""

    async def handle(self, event: Any, context: Context) -> Any:
        """Handle one event; the return value is the invocation's result."""
        raise NotImplementedError(
            f"{type(self).__name__} must override 'async def handle(self, event, "
            "context)'"
        )

    async def flush(self, batch: Flush) -> None:
        """Write out the items of ``batch``; raise to keep them buffered."""

    async def close(self) -> None:
        """Runs once at shutdown, after the final flush."""

    async def before_snapshot(self) -> None:
        """SnapStart: runs before Lambda snapshots the initialised sandbox."""

    async def after_restore(self) -> None:
        """SnapStart: runs in each sandbox restored from the snapshot."""

    def flush_hooks(self) -> list[FlushHook]:
        """``flush`` (when overridden) then every ``@flush_hook``, in order."""
        hooks: list[FlushHook] = []
        if type(self).flush is not StatefulHandler.flush:
            hooks.append(self.flush)
        hooks.extend(getattr(self, name) for name in self._flush_hook_names)
        return hooks


class HandlerAdapter:
    """What the runtime calls, whichever kind of handler the user wrote."""

    def __init__(self, target: object, *, max_workers: int = 1) -> None:
        self.target = target
        self.stateful: StatefulHandler | None = None
        self._call: Callable[[Any, Context], Awaitable[Any]]
        self._executor: ThreadPoolExecutor | None = None

        if isinstance(target, type) and issubclass(target, StatefulHandler):
            self.stateful = target()
            self._call = self.stateful.handle
        elif isinstance(target, StatefulHandler):
            self.stateful = target
            self._call = target.handle
        elif _is_async_callable(target):
            self._call = target  # type: ignore[assignment]
        elif callable(target):
            self._sync = target
            if max_workers == 1:
                self._call = self._call_inline
            else:
                # Several invocations at once: plain functions may block, so
                # they run in worker threads and never stall the loop.
                self._executor = ThreadPoolExecutor(
                    max_workers=max_workers, thread_name_prefix="statefulrt-handler"
                )
                self._call = self._call_in_thread
        else:
            raise TypeError(
                f"handler must be a function or a StatefulHandler subclass, "
                f"not {target!r}"
            )

    async def init(self) -> None:
        if self.stateful is not None:
            await self.stateful.init()

    async def call(self, event: Any, context: Context) -> Any:
        result = await self._call(event, context)
        if inspect.isawaitable(result):
            # a sync function that returned a coroutine: finish it here
            result = await result
        return result

    async def close(self) -> None:
        try:
            if self.stateful is not None:
                try:
                    await self.stateful.close()
                finally:
                    await self.stateful.resources.close()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call_inline(self, event: Any, context: Context) -> Any:
        # One invocation at a time: nothing else would run on the loop while
        # the function works, so it runs right here, as awslambdaric runs it
        # on its main thread; a thread hop would cost about 35 us an
        # invocation.  The running loop is hidden for the call, so the
        # function may start its own with asyncio.run() as it could there.
        loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)
        try:
            return self._sync(event, context)
        finally:
            asyncio.events._set_running_loop(loop)

    async def _call_in_thread(self, event: Any, context: Context) -> Any:
        loop = asyncio.get_running_loop()
        run = contextvars.copy_context().run
        return await loop.run_in_executor(
            self._executor, run, self._sync, event, context
        )


def _is_async_callable(target: object) -> bool:
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)
