"""The execution environment: a supervised runtime process serving invocations.

The invoke endpoint *submits* invocations; one worker task serves them
strictly one after another, which is what makes concurrent callers safe (RIE
crashes on them; Lambda queues them onto other environments). For each one
the worker starts the runtime if there is none (a cold start), offers the
event through the ``RuntimeSlot`` the Runtime API talks to, and follows it to
one of its ends: the runtime polls again (finished), the process dies (a
crash), or the deadline passes (a timeout). A crash, a timeout or an init
error resets the environment: the process group is killed and the next
invocation starts a new one, cold (``/tmp`` and the task root are the host's
and survive).

Seams for later work: the Extensions API adds its own readiness to
``Environment``; freezing between invocations belongs where an invocation is
finished; shutdown with a SIGTERM budget replaces the SIGKILL in ``_reset``;
Managed Instances replace the single slot and worker with a pool of each.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._config import FunctionConfig
from ._invocation import Answer, Invocation
from ._logging import logger
from ._report import Report, Reporter, ReportStatus
from ._slot import Environment, RuntimeSlot
from ._supervisor import RuntimeProcess, exit_reason
from ._wire import function_error, platform_error_type

__all__ = ["Sandbox"]

# How long a runtime that posted /init/error has to exit on its own; the
# official clients exit within milliseconds of the 202.
_INIT_ERROR_EXIT_GRACE: Final = 0.5


@dataclass(frozen=True)
class _Outcome:
    status: ReportStatus
    ended_at: float
    error_type: str | None = None


class Sandbox:
    """Serves invocations one at a time against a supervised runtime process."""

    def __init__(
        self, command: Sequence[str], config: FunctionConfig, reporter: Reporter
    ) -> None:
        if not command:
            raise ValueError(
                "command must name the runtime to start, e.g. ['./bootstrap']"
            )
        self._command = tuple(command)
        self._config = config
        self._reporter = reporter
        self._runtime_api = ""
        self._queue: asyncio.Queue[Invocation] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._serving: Invocation | None = None
        self._closed = False

        self.slot = RuntimeSlot(config.timeout, reporter)
        # Every process not yet reaped, so close() can wait for all of them
        # even if a reset was interrupted half way.
        self._processes: set[RuntimeProcess] = set()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        env = self.slot.env
        return env.process.pid if env is not None and env.process.alive else None

    # -- lifecycle ---------------------------------------------------------

    def start(self, runtime_api: str) -> None:
        """Start serving; ``runtime_api`` is the ``host:port`` runtimes dial."""
        if self._closed:
            raise RuntimeError(
                "a closed emulator cannot be restarted; create a new one"
            )
        if self._worker is not None:
            raise RuntimeError("the sandbox is already started")
        self._runtime_api = runtime_api
        self._worker = asyncio.create_task(self._work(), name="statefulrt-emulator")

    async def close(self) -> None:
        """Stop serving, answer everyone still waiting, kill the runtime."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            # wait() rather than await: the worker's CancelledError is the
            # expected result here, not something to propagate or swallow.
            await asyncio.wait({self._worker})
            self._worker = None

        gone = _shutdown_answer()
        if self._serving is not None:
            self._serving.settle(gone)
            self._serving = None
        while not self._queue.empty():
            self._queue.get_nowait().settle(gone)
            self._queue.task_done()
        await self._reset()
        for process in list(self._processes):
            await process.kill()

    async def submit(self, invocation: Invocation) -> Answer:
        """Queue ``invocation`` and wait for its caller-facing answer."""
        if self._worker is None and not self._closed:
            raise RuntimeError("the sandbox is not running; start it before invoking")
        if self._closed:
            return _shutdown_answer()
        self._queue.put_nowait(invocation)
        # A caller that hangs up does not cancel the invocation: on Lambda
        # it runs to the end regardless.
        return await asyncio.shield(invocation.answer)

    async def wait_idle(self) -> None:
        """Return once every submitted invocation has finished and been reported."""
        await self._queue.join()

    # -- the worker --------------------------------------------------------

    async def _work(self) -> None:
        while True:
            invocation = self._serving = await self._queue.get()
            try:
                await self._serve(invocation)
            except Exception:
                logger.exception(
                    "emulator failed serving request %s; resetting the sandbox",
                    invocation.request_id,
                )
                invocation.settle(
                    Answer(
                        function_error("ServiceException", "Emulator internal error"),
                        status=500,
                    )
                )
                await self._reset()
            finally:
                self._queue.task_done()
            # Not cleared on cancellation: close() answers that caller.
            self._serving = None

    async def _serve(self, invocation: Invocation) -> None:
        loop = asyncio.get_running_loop()
        invocation.dispatched_at = loop.time()

        # Cold start: a new process whose init is timed from the spawn.
        env = self.slot.env
        cold = env is None or not env.process.alive
        if env is None or not env.process.alive:
            if env is not None:
                await self._reset()
            try:
                env = await self._launch()
            except OSError as exc:
                self._report(
                    invocation, None, False, self._unlaunchable(invocation, exc)
                )
                return

        # Hand the event to the runtime, then follow it to the end.
        self.slot.offer(invocation)
        outcome = await self._await_handout(invocation, env)
        if outcome is None:
            outcome = await self._await_finish(invocation, env)
        self._report(invocation, env, cold, outcome)

    async def _launch(self) -> Environment:
        loop = asyncio.get_running_loop()
        launched_at = loop.time()
        environ = self._config.runtime_environ(self._runtime_api, os.environ)
        process = await RuntimeProcess.spawn(
            self._command, env=environ, cwd=self._config.task_root
        )
        self.starts += 1
        self._processes.add(process)
        process.exited.add_done_callback(lambda _: self._processes.discard(process))
        env = Environment(process, launched_at)
        self.slot.attach(env)
        logger.info(
            "runtime process %d started (start %d): %s",
            process.pid,
            self.starts,
            " ".join(self._command),
        )
        return env

    def _unlaunchable(self, invocation: Invocation, exc: OSError) -> _Outcome:
        loop = asyncio.get_running_loop()
        logger.error(
            "cannot start the runtime %r: %s; check the command and its cwd",
            self._command[0],
            exc,
        )
        # Lambda words this the way Go's exec package reports it.
        reason = exc.strerror or str(exc)
        message = (
            f"RequestId: {invocation.request_id} "
            f"Error: fork/exec {self._command[0]}: {reason.lower()}"
        )
        invocation.settle(Answer.failure("Runtime.InvalidEntrypoint", message))
        return _Outcome("crash", loop.time(), "Runtime.InvalidEntrypoint")

    async def _await_handout(
        self, invocation: Invocation, env: Environment
    ) -> _Outcome | None:
        """Wait for the runtime to take the event; ``None`` once it has."""
        loop = asyncio.get_running_loop()
        if env.ready.done():
            limit = invocation.dispatched_at + self._config.timeout
        else:
            # NOTE(suppressed-init): Lambda retries an init that overran its
            # ten seconds inside the invoke; the emulator fails the invoke.
            limit = env.launched_at + self._config.init_timeout
        await _first(
            loop, limit, invocation.handed_out, env.init_error, env.process.exited
        )
        if invocation.handed_out.done():
            return None

        ended_at = loop.time()
        if env.init_error.done():
            # The caller already has the init error; the runtime is meant to
            # exit by itself now (after flushing its logs), and is killed if
            # it does not do so promptly.
            grace = min(limit, loop.time() + _INIT_ERROR_EXIT_GRACE)
            await _first(loop, grace, env.process.exited)
            await self._reset()
            return _Outcome("error", ended_at, env.init_error.result())
        if not env.process.alive:
            return await self._crashed(invocation, env, ended_at)
        return await self._timed_out(invocation, env, ended_at)

    async def _await_finish(self, invocation: Invocation, env: Environment) -> _Outcome:
        """Wait for the runtime to poll ``/next`` again, die, or overrun."""
        loop = asyncio.get_running_loop()
        await _first(loop, invocation.deadline, invocation.finished, env.process.exited)
        ended_at = loop.time()
        if invocation.finished.done():
            answer = invocation.answer.result()
            return _Outcome("error" if answer.function_error else "success", ended_at)
        if not env.process.alive:
            return await self._crashed(invocation, env, ended_at)
        return await self._timed_out(invocation, env, ended_at)

    async def _crashed(
        self, invocation: Invocation, env: Environment, ended_at: float
    ) -> _Outcome:
        returncode = env.process.returncode
        reason = exit_reason(returncode if returncode is not None else -9)
        logger.warning(
            "runtime process %d exited during request %s: %s",
            env.process.pid,
            invocation.request_id,
            reason,
        )
        message = (
            f"RequestId: {invocation.request_id} "
            f"Error: Runtime exited with error: {reason}"
        )
        invocation.settle(Answer.failure("Runtime.ExitError", message))
        await self._reset()
        return _Outcome("crash", ended_at, "Runtime.ExitError")

    async def _timed_out(
        self, invocation: Invocation, env: Environment, ended_at: float
    ) -> _Outcome:
        timeout = self._config.timeout
        logger.warning(
            "request %s timed out after %.2f seconds; killing runtime process %d",
            invocation.request_id,
            timeout,
            env.process.pid,
        )
        message = (
            f"RequestId: {invocation.request_id} "
            f"Error: Task timed out after {timeout:.2f} seconds"
        )
        invocation.settle(Answer.failure("Sandbox.Timedout", message))
        await self._reset()
        return _Outcome("timeout", ended_at)

    def _report(
        self,
        invocation: Invocation,
        env: Environment | None,
        cold: bool,
        outcome: _Outcome,
    ) -> None:
        if invocation.handed_out.done():
            ended_at = min(outcome.ended_at, invocation.deadline)
            duration = ended_at - invocation.handed_at
        else:
            # Never reached the handler: START is printed now, and the time
            # spent trying to get there is the invocation's duration.
            self._reporter.start(invocation.request_id)
            duration = outcome.ended_at - invocation.dispatched_at

        init_duration: float | None = None
        memory = 0
        if env is not None:
            env.process.sample_memory()
            memory = env.process.peak_rss_mb
            if cold:
                init_ended_at = env.init_ended_at or outcome.ended_at
                init_duration = (init_ended_at - env.launched_at) * 1000

        error_type = outcome.error_type
        self._reporter.end(
            Report.build(
                invocation.request_id,
                duration_ms=duration * 1000,
                memory_size_mb=self._config.memory_mb,
                max_memory_used_mb=memory,
                init_duration_ms=init_duration,
                status=outcome.status,
                error_type=None
                if error_type is None
                else platform_error_type(error_type),
            )
        )

    async def _reset(self) -> None:
        """Forget the environment and kill its process (SIGKILL, no budget)."""
        env = self.slot.detach()
        if env is not None:
            await env.process.kill()


def _shutdown_answer() -> Answer:
    message = "The emulator shut down before the invocation finished."
    return Answer(function_error("ServiceException", message), status=500)


async def _first(
    loop: asyncio.AbstractEventLoop, limit: float, *waitables: asyncio.Future[Any]
) -> None:
    """Wait until one of ``waitables`` is done or the loop clock reaches ``limit``."""
    remaining = max(0.0, limit - loop.time())
    await asyncio.wait(
        waitables, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
    )
