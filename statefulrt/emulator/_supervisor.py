"""The sandbox's processes: start them, watch them, measure them, stop them.

The runtime and every external extension run in a session of their own and are
killed as process groups, the way Lambda tears down a whole sandbox on reset: a
``bootstrap`` shell script that forgot to ``exec`` must not leave its Python
child behind. Freezing stops and continues the same groups.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Final

from ._logging import logger

__all__ = ["SandboxProcess", "exit_reason"]

_KB_PER_MB: Final = 1024


def exit_reason(returncode: int) -> str:
    """Describe an exit the way Go's ``os.ProcessState`` does.

    Lambda's ``Runtime.ExitError`` messages embed that text ("exit status 3",
    "signal: killed"), so callers who match on it see the same words here.
    """
    if returncode >= 0:
        return f"exit status {returncode}"
    signum = -returncode
    try:
        name = signal.strsignal(signum)
    except ValueError:
        name = None
    return f"signal: {(name or f'signal {signum}').lower()}"


class SandboxProcess:
    """One process of the sandbox (the runtime or an extension), spawn to reaping."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._peak_rss_kb = 0
        self._group_killed = False
        self.exited: asyncio.Task[int] = asyncio.create_task(
            process.wait(), name=f"statefulrt-emulator-wait-{process.pid}"
        )
        # When the runtime dies the sandbox dies with it: anything it forked
        # goes too, right away, while the group id cannot have been reused.
        self.exited.add_done_callback(lambda _: self._kill_group())

    @classmethod
    async def spawn(
        cls,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
    ) -> SandboxProcess:
        """Start ``command``; its stdout and stderr are the emulator's own.

        Raises ``OSError`` when the command cannot be executed at all.
        """
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        logger.debug("process %d started: %s", process.pid, command[0])
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def has_exited(self) -> bool:
        """True once the process has exited, even before asyncio reaps it.

        ``alive`` turns False only when the child watcher has reaped the
        process and the loop has run the callback; ``waitid`` with
        ``WNOWAIT`` looks at the zombie without reaping it.
        """
        if not self.alive:
            return True
        try:
            status = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # reaped already; the loop has yet to hear of it
        return status is not None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def peak_rss_mb(self) -> int:
        """Peak resident memory seen so far, in MB rounded up."""
        return math.ceil(self._peak_rss_kb / _KB_PER_MB)

    def sample_memory(self) -> None:
        """Record the process's high-water mark while it can still be read.

        ``VmHWM`` is gone once the process has been reaped, so this is called
        at every invocation boundary and right before a kill.
        """
        if not self.alive:
            return
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        self._peak_rss_kb = max(self._peak_rss_kb, kb)
                        return
        except (OSError, ValueError, IndexError):
            # NOTE(portability): /proc exists on Linux only; elsewhere the
            # report shows 0 MB until a psutil-free probe is added.
            return

    def terminate(self) -> None:
        """Send SIGTERM to the process itself, as Lambda does at shutdown."""
        if self.alive and self._process.returncode is None:
            try:
                self._process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def signal_group(self, signum: signal.Signals) -> None:
        """Send ``signum`` (SIGSTOP, SIGCONT) to the whole group while it exists."""
        if self._group_killed or self._process.returncode is not None:
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    async def kill(self) -> None:
        """SIGKILL the whole process group and wait until it is reaped."""
        self.sample_memory()
        self._kill_group()
        await asyncio.shield(self.exited)

    def _kill_group(self) -> None:
        # Exactly once: after the group is gone its id may be handed to an
        # unrelated process group, which must never receive this signal.
        if self._group_killed:
            return
        self._group_killed = True
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
