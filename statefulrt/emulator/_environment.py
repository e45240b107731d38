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

    ``runtime_ready`` resolves at the runtime's first ``/next`` (under
    SnapStart: its ``/restore/next``, the moment the snapshot is taken);
    ``init_error`` resolves with the reported error type when the runtime
    posts ``/init/error`` (``init_error_payload`` is what the caller gets).
    ``init_ended_at`` is set by the sandbox once the runtime *and* every
    registered extension have polled. Under SnapStart ``restored`` resolves
    at the first ``/next`` after the restore and ``restore_error`` like
    ``init_error``, from ``/restore/error``.
    """

    extensions: ExtensionRegistry
    launched_at: float
    runtime: SandboxProcess | None = None
    externals: dict[str, SandboxProcess] = field(default_factory=dict)
    runtime_ready: asyncio.Future[None] = field(default_factory=_future)
    init_error: asyncio.Future[str] = field(default_factory=_error_future)
    init_error_payload: bytes = b""
    init_ended_at: float | None = None
    restored: asyncio.Future[None] = field(default_factory=_future)
    restore_error: asyncio.Future[str] = field(default_factory=_error_future)
    restore_error_payload: bytes = b""
    restore_started_at: float | None = None
    restore_ended_at: float | None = None
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

    def end_restore(self) -> None:
        """The restored runtime polled ``/next``: its after-restore work is done."""
        if not self.restored.done() and not self.restore_error.done():
            self.restore_ended_at = asyncio.get_running_loop().time()
            self.restored.set_result(None)

    def fail_restore(self, error_type: str, payload: bytes) -> None:
        if not self.restored.done() and not self.restore_error.done():
            self.restore_error_payload = payload
            self.restore_error.set_result(error_type)

    @property
    def restore_duration(self) -> float | None:
        """Seconds from the restore to the runtime's first ``/next``, once known."""
        if self.restore_started_at is None or self.restore_ended_at is None:
            return None
        return max(0.0, self.restore_ended_at - self.restore_started_at)

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
