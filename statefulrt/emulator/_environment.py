"""One execution environment: its processes, its extensions, its init.

An environment is born at a cold start and dies at a reset or a shutdown. It
holds the runtime process (once launched), the external extension processes
(launched first), the registry the Extensions API talks to, and how far init
has come. Freezing stops every process group of the environment, the way
Lambda freezes the whole sandbox between invocations.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any

from ._extensions import ExtensionRegistry
from ._supervisor import SandboxProcess

__all__ = ["Environment"]


def _future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


def _error_future() -> asyncio.Future[str]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class Environment:
    """One runtime, its external extensions, and how far their init has come.

    ``runtime_ready`` resolves at the runtime's first ``/next``;
    ``init_error`` resolves with the reported error type when the runtime
    posts ``/init/error`` (``init_error_payload`` is what the caller gets).
    ``init_ended_at`` is set by the sandbox once the runtime *and* every
    registered extension have polled.
    """

    extensions: ExtensionRegistry
    launched_at: float
    runtime: SandboxProcess | None = None
    externals: dict[str, SandboxProcess] = field(default_factory=dict)
    runtime_ready: asyncio.Future[None] = field(default_factory=_future)
    init_error: asyncio.Future[str] = field(default_factory=_error_future)
    init_error_payload: bytes = b""
    init_ended_at: float | None = None
    frozen: bool = False
    # The signal the platform already sent the runtime outside the shutdown
    # phase (a SIGKILL asked for by a test), for the shutdown record.
    signalled: str | None = None

    @property
    def processes(self) -> list[SandboxProcess]:
        runtime = [] if self.runtime is None else [self.runtime]
        return runtime + list(self.externals.values())

    # -- init -----------------------------------------------------------------

    def end_runtime_init(self) -> None:
        """The runtime polled ``/next``: registration closes with it."""
        if not self.runtime_ready.done() and not self.init_error.done():
            self.extensions.close_registration()
            self.runtime_ready.set_result(None)

    def fail_init(self, error_type: str, payload: bytes) -> None:
        if not self.runtime_ready.done() and not self.init_error.done():
            self.init_error_payload = payload
            self.init_error.set_result(error_type)

    # -- health ---------------------------------------------------------------

    def exits(self) -> list[asyncio.Future[Any]]:
        """What resolves when the environment breaks: a process or extension fails."""
        exits: list[asyncio.Future[Any]] = [p.exited for p in self.processes]
        exits.append(self.extensions.failed)
        return exits

    @property
    def broken(self) -> bool:
        return any(not p.alive for p in self.processes) or self.extensions.failed.done()

    def dead(self) -> bool:
        """Like ``broken``, but also sees a process that exited a moment ago."""
        return self.broken or any(p.has_exited() for p in self.processes)

    def dead_extension(self) -> tuple[str, SandboxProcess] | None:
        """The first external extension whose process has exited, if any."""
        for name, process in self.externals.items():
            if not process.alive:
                return name, process
        return None

    # -- freezing -------------------------------------------------------------

    def freeze(self) -> None:
        """Stop every process group, as Lambda freezes an idle sandbox."""
        for process in self.processes:
            process.signal_group(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if not self.frozen:
            return
        self.frozen = False
        for process in self.processes:
            process.signal_group(signal.SIGCONT)
