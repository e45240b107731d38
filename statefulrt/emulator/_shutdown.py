"""The shutdown phase: how an environment ends (runtime-api.md A.7, A.9).

Lambda ends an environment the same way whether it spins down, times out or
failed; only the ``shutdownReason`` differs. With no extension registered the
runtime gets SIGKILL and nothing else happens. Otherwise the phase has a
budget: the runtime gets SIGTERM and a share of it, then SIGKILL if it is still
there; external extensions subscribed to SHUTDOWN get the event and the rest of
the budget to exit; the others, and whatever is left at the deadline, are
SIGKILLed. The figures are the documented ones (500 ms with internal
extensions only; 2,000 ms with an external one, of which the runtime gets
300 ms, or 500 ms when an internal extension is registered too). RIE gives the
runtime 30 % instead; the documented split is what a function meets on Lambda.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, Literal, NamedTuple

from ._environment import Environment
from ._extensions import ExtensionRegistry
from ._logging import logger

__all__ = ["Shutdown", "ShutdownReason", "budget", "shut_down"]

ShutdownReason = Literal["spindown", "timeout", "failure"]

_INTERNAL_ONLY_MS: Final = 500
_WITH_EXTERNAL_MS: Final = 2000
_RUNTIME_SHARE_MS: Final = 300
_RUNTIME_SHARE_WITH_INTERNAL_MS: Final = 500


class Shutdown(NamedTuple):
    """How one environment ended.

    ``signal`` is what the runtime got from the platform (``"SIGTERM"``,
    ``"SIGKILL"``; also ``"SIGKILL"`` after ``Emulator.kill()``), ``None``
    when it had exited by itself (a crash); ``exit_code`` is the
    runtime's exit status as Python reports it (``-9`` after SIGKILL), ``None``
    when no runtime was ever started.
    """

    reason: ShutdownReason
    signal: str | None
    exit_code: int | None


def budget(
    extensions: ExtensionRegistry, budget_ms: float | None = None
) -> tuple[float, float]:
    """The phase's length and the runtime's share of it, in seconds.

    ``budget_ms`` replaces the platform's total; the runtime's share keeps
    its documented proportion of it when an external extension is there.
    """
    total: float
    share: float
    if extensions.has_external:
        total = _WITH_EXTERNAL_MS
        share = (
            _RUNTIME_SHARE_WITH_INTERNAL_MS
            if extensions.has_internal
            else _RUNTIME_SHARE_MS
        )
    else:
        total = share = _INTERNAL_ONLY_MS
    if budget_ms is not None:
        share = budget_ms * share / total
        total = budget_ms
    return total / 1000, share / 1000


async def shut_down(
    env: Environment, reason: ShutdownReason, budget_ms: float | None = None
) -> Shutdown:
    """End ``env``: signals, SHUTDOWN events, and SIGKILL for what is left."""
    loop = asyncio.get_running_loop()
    runtime = env.runtime
    extensions = env.extensions
    env.thaw()

    # No extension registered: no warning, no budget.
    if not extensions.registered:
        sent = env.signalled
        if runtime is not None and not runtime.has_exited():
            sent = "SIGKILL"
        for process in env.processes:
            await process.kill()
        code = None if runtime is None else runtime.returncode
        return Shutdown(reason, sent, code)

    total, share = budget(extensions, budget_ms)
    started = loop.time()
    deadline_ms = int(time.time() * 1000 + total * 1000)

    # The runtime first: SIGTERM, its share of the budget, then SIGKILL.
    sent = env.signalled
    if runtime is not None and not runtime.has_exited():
        sent = "SIGTERM"
        runtime.terminate()
        await asyncio.wait({runtime.exited}, timeout=share)
        if runtime.alive:
            logger.warning(
                "runtime process %d ignored SIGTERM for %d ms; killing it",
                runtime.pid,
                round(share * 1000),
            )
        await runtime.kill()

    # Then the external extensions: SHUTDOWN to subscribers, SIGKILL to the rest.
    subscribed = set(extensions.dispatch_shutdown(reason, deadline_ms))
    waiting = []
    for name, process in env.externals.items():
        if name in subscribed and process.alive:
            waiting.append(process.exited)
        else:
            await process.kill()
    if waiting:
        remaining = max(0.0, started + total - loop.time())
        await asyncio.wait(waiting, timeout=remaining)
    for process in env.processes:
        await process.kill()

    code = None if runtime is None else runtime.returncode
    logger.info(
        "environment shut down (%s): runtime %s, exit code %s",
        reason,
        sent or "already gone",
        code,
    )
    return Shutdown(reason, sent, code)
