"""The execution environment: one runtime process and the invocation it serves.

Two sides meet here. The invoke endpoint *submits* invocations; a single
worker task serves them strictly one after another, which is what makes
concurrent callers safe (RIE crashes on them; Lambda queues them onto other
environments). The Runtime API routes call ``next``, ``response``, ``error``
and ``init_error``, which move the runtime through RAPID's states:

    Started --next--> Ready --(event handed out)--> Running
    Running --response/error--> RuntimeResponseSentState --next--> Ready
    Started --init/error--> InitError

An invocation is *answered* when the runtime posts its response, and
*finished* only when the runtime polls ``/next`` again: work done in between
is billed and bounded by the same deadline, as on Lambda. A timeout, a crash
or an init error resets the environment: the process is killed and the next
invocation starts a new one (a cold start; ``/tmp`` and the task root are the
host's and survive).

Seams for later work: the Extensions API adds its own readiness to
``_Environment``; freezing between invocations belongs where ``next`` marks
an invocation finished; shutdown with a SIGTERM budget replaces the SIGKILL
in ``_reset``; Managed Instances replace the single ``_poll`` and worker with
a pool of each.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ._config import FunctionConfig
from ._invocation import Answer, Invocation
from ._report import Report, Reporter, ReportStatus
from ._supervisor import RuntimeProcess, exit_reason
from ._wire import MAX_PAYLOAD_BYTES, RuntimeAPIError, function_error

__all__ = ["RuntimeState", "Sandbox"]

logger = logging.getLogger("statefulrt.emulator")

# How long a runtime that posted /init/error has to exit on its own; the
# official clients exit within milliseconds of the 202.
_INIT_ERROR_EXIT_GRACE: Final = 0.5

_PLATFORM_ERROR_TYPE = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")


class RuntimeState(enum.Enum):
    """The runtime's state, named as RAPID names it in its 403 messages."""

    STARTED = "Started"
    INIT_ERROR = "InitError"
    READY = "Ready"
    RUNNING = "Running"
    RESPONSE_SENT = "RuntimeResponseSentState"


@dataclass(eq=False)
class _Environment:
    """One runtime process and how far its init has come."""

    process: RuntimeProcess
    launched_at: float
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    init_error: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    init_ended_at: float | None = None


@dataclass(eq=False)
class _Poll:
    """A ``/next`` request waiting for an event; ``None`` tells it to give up."""

    future: asyncio.Future[Invocation | None]
    transport: asyncio.BaseTransport | None

    @property
    def stale(self) -> bool:
        # The runtime that sent it is gone (killed, or it hung up); its
        # handler may not have been cancelled yet.
        return self.transport is None or self.transport.is_closing()


@dataclass(frozen=True)
class _Outcome:
    status: ReportStatus
    ended_at: float
    error_type: str | None = None


def platform_error_type(value: str) -> str:
    """Normalise an error type for the REPORT line the way RAPID does."""
    if _PLATFORM_ERROR_TYPE.fullmatch(value):
        return value
    return "Function.Unknown" if value.startswith("Function.") else "Runtime.Unknown"


def error_payload(body: bytes, error_type: str | None) -> bytes:
    """The caller-facing body for an error the runtime posted.

    A JSON object goes through untouched, as Lambda passes it; anything else
    is wrapped, with the error-type header standing in for the missing type.
    """
    try:
        if isinstance(orjson.loads(body), dict):
            return body
    except orjson.JSONDecodeError:
        pass
    message = body.decode("utf-8", errors="replace").strip()
    return function_error(error_type or "Runtime.Unknown", message)


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
        self._closed = False

        self._env: _Environment | None = None
        self._state = RuntimeState.STARTED
        self._current: Invocation | None = None
        self._pending: Invocation | None = None
        self._poll: _Poll | None = None
        # Every process not yet reaped, so close() can wait for all of them
        # even if a reset was interrupted half way.
        self._processes: set[RuntimeProcess] = set()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        env = self._env
        return env.process.pid if env is not None and env.process.alive else None

    @property
    def function_arn(self) -> str:
        return self._config.arn

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
        if self._current is not None:
            self._current.settle(gone)
            self._current = None
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
            invocation = await self._queue.get()
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
                self._current = None
                await self._reset()
            finally:
                self._queue.task_done()

    async def _serve(self, invocation: Invocation) -> None:
        loop = asyncio.get_running_loop()
        invocation.dispatched_at = loop.time()

        # Cold start: a new process whose init is timed from the spawn.
        env = self._env
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
        self._current = invocation
        self._offer(invocation)
        outcome = await self._await_handout(invocation, env)
        if outcome is None:
            outcome = await self._await_finish(invocation, env)
        self._current = None
        self._report(invocation, env, cold, outcome)

    async def _launch(self) -> _Environment:
        loop = asyncio.get_running_loop()
        launched_at = loop.time()
        environ = self._config.runtime_environ(self._runtime_api, os.environ)
        process = await RuntimeProcess.spawn(
            self._command, env=environ, cwd=self._config.task_root
        )
        self.starts += 1
        self._processes.add(process)
        process.exited.add_done_callback(lambda _: self._processes.discard(process))
        env = _Environment(process, launched_at)
        self._env = env
        if self._state is RuntimeState.READY:
            # The runtime polled /next before spawn() returned.
            self._end_init(env)
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
        self, invocation: Invocation, env: _Environment
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

    async def _await_finish(
        self, invocation: Invocation, env: _Environment
    ) -> _Outcome:
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
        self, invocation: Invocation, env: _Environment, ended_at: float
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
        self, invocation: Invocation, env: _Environment, ended_at: float
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
        env: _Environment | None,
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
        env, self._env = self._env, None
        self._state = RuntimeState.STARTED
        self._pending = None
        poll, self._poll = self._poll, None
        if poll is not None and not poll.future.done():
            poll.future.set_result(None)
        if env is not None:
            await env.process.kill()

    # -- hand-out ----------------------------------------------------------

    def _offer(self, invocation: Invocation) -> None:
        poll, self._poll = self._poll, None
        if poll is not None and not poll.stale and not poll.future.done():
            self._hand_out(invocation)
            poll.future.set_result(invocation)
            return
        if poll is not None and not poll.future.done():
            poll.future.set_result(None)
        self._pending = invocation

    def _hand_out(self, invocation: Invocation) -> None:
        loop = asyncio.get_running_loop()
        timeout = self._config.timeout
        invocation.handed_at = loop.time()
        invocation.deadline = invocation.handed_at + timeout
        invocation.deadline_ms = int(time.time() * 1000) + round(timeout * 1000)
        self._state = RuntimeState.RUNNING
        invocation.handed_out.set_result(None)
        self._reporter.start(invocation.request_id)

    def _end_init(self, env: _Environment) -> None:
        if not env.ready.done():
            env.init_ended_at = asyncio.get_running_loop().time()
            env.ready.set_result(None)

    # -- the Runtime API side ----------------------------------------------

    async def next(self, transport: asyncio.BaseTransport | None) -> Invocation:
        """``GET /runtime/invocation/next``: block until there is an event."""
        poll = self._poll
        if poll is not None and not poll.future.done():
            if not poll.stale:
                raise RuntimeAPIError.transition(self._state.value, "Ready")
            poll.future.set_result(None)
        if self._state in (RuntimeState.RUNNING, RuntimeState.INIT_ERROR):
            raise RuntimeAPIError.transition(self._state.value, "Ready")

        self._sample_memory()

        # Polling again is what ends init, or ends the previous invocation.
        if self._state is RuntimeState.STARTED and self._env is not None:
            self._end_init(self._env)
        if self._state is RuntimeState.RESPONSE_SENT and self._current is not None:
            self._current.finished.set_result(None)
        self._state = RuntimeState.READY

        pending, self._pending = self._pending, None
        if pending is not None:
            self._hand_out(pending)
            return pending

        future: asyncio.Future[Invocation | None] = (
            asyncio.get_running_loop().create_future()
        )
        poll = self._poll = _Poll(future, transport)
        try:
            invocation = await future
        finally:
            if self._poll is poll:
                self._poll = None
        if invocation is None:
            # The environment was reset under this poll: RAPID's answer to a
            # runtime it no longer wants is a 500, which tells it to exit.
            raise RuntimeAPIError.internal()
        return invocation

    def response(
        self,
        request_id: str,
        body: bytes | None,
        *,
        content_type: str | None,
        mode: str | None,
    ) -> None:
        """``POST /runtime/invocation/{id}/response``; ``body`` None if too big."""
        invocation = self._claim(request_id, "InvocationResponse")
        self._state = RuntimeState.RESPONSE_SENT
        self._sample_memory()

        if mode is not None and mode != "streaming":
            message = (
                f"RequestId: {request_id} Error: Lambda-Runtime-Function-Response-Mode "
                f"must be 'streaming' when present, got {mode!r}"
            )
            invocation.settle(
                Answer.failure("Runtime.InvalidResponseModeHeader", message)
            )
            raise RuntimeAPIError.invalid_response_mode()
        if body is None:
            message = (
                "Response payload size exceeded maximum allowed payload size "
                f"({MAX_PAYLOAD_BYTES} bytes)."
            )
            invocation.settle(Answer.failure("Function.ResponseSizeTooLarge", message))
            raise RuntimeAPIError.too_large(MAX_PAYLOAD_BYTES)

        # NOTE(streaming): a streamed response is buffered whole and then
        # answered, until the streaming invoke endpoint exists.
        invocation.settle(Answer(body, content_type or "application/json"))

    def error(
        self, request_id: str, body: bytes | None, *, error_type: str | None, limit: int
    ) -> None:
        """``POST /runtime/invocation/{id}/error``; ``body`` None if too big."""
        invocation = self._claim(request_id, "InvocationErrorResponse")
        if body is None:
            # The invocation stays open: the runtime may still post a
            # smaller error, or be timed out.
            raise RuntimeAPIError.too_large(limit)
        self._state = RuntimeState.RESPONSE_SENT
        self._sample_memory()
        payload = error_payload(body, error_type)
        invocation.settle(Answer(payload, function_error="Unhandled"))

    def init_error(
        self, body: bytes | None, *, error_type: str | None, limit: int
    ) -> None:
        """``POST /runtime/init/error``: fail init and answer the waiting caller."""
        if self._state is not RuntimeState.STARTED:
            raise RuntimeAPIError.transition(self._state.value, "InitError")
        if body is None:
            raise RuntimeAPIError.too_large(limit)
        self._state = RuntimeState.INIT_ERROR
        self._sample_memory()

        payload = error_payload(body, error_type)
        if self._current is not None:
            self._current.settle(Answer(payload, function_error="Unhandled"))
        env = self._env
        if env is not None and not env.init_error.done():
            reported = error_type or orjson.loads(payload).get("errorType")
            env.init_ended_at = asyncio.get_running_loop().time()
            env.init_error.set_result(str(reported or "Runtime.Unknown"))

    def _sample_memory(self) -> None:
        # Peak memory can only be read from a live process, so every call
        # the runtime makes is a chance to read it before a crash hides it.
        if self._env is not None:
            self._env.process.sample_memory()

    def _claim(self, request_id: str, target: str) -> Invocation:
        invocation = self._current
        answerable = (RuntimeState.RUNNING, RuntimeState.RESPONSE_SENT)
        if (
            invocation is None
            or invocation.request_id != request_id
            or self._state not in answerable
        ):
            raise RuntimeAPIError.invalid_request_id()
        if self._state is RuntimeState.RESPONSE_SENT:
            raise RuntimeAPIError.transition(self._state.value, target)
        return invocation


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
