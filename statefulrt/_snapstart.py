"""SnapStart: hooks around the snapshot Lambda takes of an initialised sandbox.

Many sandboxes restore from one snapshot, so anything unique captured before
it (connections, random seeds, credentials) would be shared by all of them.
Before the snapshot the runtime runs the before-snapshot hooks in reverse
registration order and closes resources marked ``snapshot_safe = False``; it
then asks ``/runtime/restore/next``, which returns in the restored sandbox,
reopens those resources and runs the after-restore hooks in registration
order.  Hooks registered through the ``snapshot_restore_py`` package (what
awslambdaric runs) are honoured too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ._handler import StatefulHandler
from ._log import runtime_logger

BEFORE_SNAPSHOT_ERROR = "Runtime.BeforeSnapshotError"
AFTER_RESTORE_ERROR = "Runtime.AfterRestoreError"
# awslambdaric's exit codes for the two failures
EXIT_BEFORE_SNAPSHOT = 64
EXIT_AFTER_RESTORE = 65

Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def _registry() -> tuple[list[Hook], list[Hook]]:
    try:
        import snapshot_restore_py as registry
    except ImportError:
        return [], []
    return list(registry.get_before_snapshot()), list(registry.get_after_restore())


async def _call(hook: Hook) -> None:
    function, args, kwargs = hook
    result = function(*args, **kwargs)
    if inspect.isawaitable(result):
        await result


async def before_snapshot(handler: StatefulHandler | None) -> None:
    """Run everything that must happen before the snapshot; raises on failure."""
    before, _ = _registry()
    for hook in reversed(before):
        await _call(hook)
    if handler is None:
        return
    await handler.before_snapshot()
    for name in handler.resources.unsafe_for_snapshot():
        runtime_logger.info("closing %s before the snapshot", name)
        await handler.resources[name].close()


async def after_restore(handler: StatefulHandler | None) -> None:
    """Run everything that must happen after a restore; raises on failure."""
    if handler is not None:
        for name in handler.resources.unsafe_for_snapshot():
            await handler.resources[name].open()
        await handler.after_restore()
    _, after = _registry()
    for hook in after:
        await _call(hook)
