"""The sandbox: execution environments serving invocations.

The invoke endpoint *submits* invocations and the testing controls submit
jobs (shut down, force a timeout, restart); one worker task runs them strictly
one after another, which is what makes concurrent callers safe (RIE crashes on
them; Lambda queues them onto other environments). For an invocation the
worker starts an environment if there is none (a cold start: external
extensions, then the runtime, until all of them have polled), hands the event
to the runtime with an INVOKE to the subscribed extensions, and follows it to
one of its ends: the runtime and those extensions poll again (finished), a
process dies or an extension fails (a crash), or the deadline passes (a
timeout). A crash, a timeout or an init error resets the environment through
the shutdown phase (reason ``failure`` or ``timeout``); the next invocation
starts a new one, cold, with the same temporary directory (``/tmp`` survives
resets on Lambda). Between invocations the environment can be frozen, and
after an idle period it can be spun down.

Under SnapStart every new environment is one restored from its snapshot:
init ends at the runtime's ``/restore/next``, the sandbox restores at once
(releasing that poll), and the restore ends at the runtime's first ``/next``,
or fails with its ``/restore/error``.

Under Managed Instances the worker only *dispatches*: each invocation goes to
an idle poller of the runtime pool (or is refused with ``Runtime.Unavailable``
when every poller is busy) and a follower task of its own sees it to its end,
so invocations overlap. Nothing is frozen, and a timeout is reported to its
caller without stopping the runtime, whose late answer is refused with 410.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._config import VERSION, FunctionConfig
from ._environment import Environment
from ._extensions import MAX_EXTENSIONS, ExtensionRegistry, FunctionMetadata
from ._invocation import Answer, Invocation
from ._logging import logger
from ._pool import RuntimePool
from ._report import Report, Reporter, ReportStatus
from ._runtime_side import RuntimeSide
from ._shutdown import Shutdown, ShutdownReason, shut_down
from ._slot import RuntimeSlot
from ._supervisor import SandboxProcess, exit_reason
from ._wire import RuntimeAPIError, function_error, platform_error_type

__all__ = ["SHUTDOWN_REASONS", "Sandbox"]

SHUTDOWN_REASONS: Final = ("spindown", "timeout", "failure")

# How long a runtime that posted /init/error has to exit on its own; the
# official clients exit within milliseconds of the 202.
_INIT_ERROR_EXIT_GRACE: Final = 0.5

# How long close() lets an answered invocation take to end by itself.
_CLOSE_GRACE: Final = 0.25

# Lambda gives a restore and the after-restore hooks ten seconds.
RESTORE_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class _Failure:
    """Why an environment could not serve: what the caller, REPORT and reset get."""

    status: ReportStatus
    reason: ShutdownReason
    error_type: str
    detail: str = ""
    payload: bytes | None = None  # an init error, as the runtime posted it

    def answer(self, request_id: str) -> Answer:
        if self.payload is not None:
            return Answer(self.payload, function_error="Unhandled")
        return Answer.failure(self.error_type, self.message(request_id))

    def message(self, request_id: str) -> str:
        return f"RequestId: {request_id} Error: {self.detail}"

    @property
    def reported_type(self) -> str | None:
        # A REPORT line says "Status: timeout" and nothing more for timeouts.
        return None if self.status == "timeout" else self.error_type


@dataclass(frozen=True)
class _Outcome:
    status: ReportStatus
    ended_at: float
    error_type: str | None = None
    reset: ShutdownReason | None = None


@dataclass(eq=False)
class _Job:
    """A testing control waiting its turn behind the invocations before it."""

    action: Callable[[], Awaitable[None]]
    done: asyncio.Future[None]


class Sandbox:
    """Serves invocations against supervised environments."""

    def __init__(
        self,
        command: Sequence[str],
        config: FunctionConfig,
        reporter: Reporter,
        *,
        extensions_dir: str | None = None,
        freeze: bool = False,
        idle_shutdown: float | None = None,
    ) -> None:
        if not command:
            raise ValueError(
                "command must name the runtime to start, e.g. ['./bootstrap']"
            )
        if freeze and config.managed:
            raise ValueError(
                "freeze cannot be combined with max_concurrency: Managed "
                "Instances never freeze an environment"
            )
        self._command = tuple(command)
        self._config = config
        self._reporter = reporter
        self._extensions_dir = extensions_dir
        # Extensions start where /opt/extensions would leave them: in /opt.
        self._extensions_cwd = os.path.dirname(os.path.abspath(extensions_dir or "."))
        self._freeze = freeze
        self._idle_shutdown = idle_shutdown
        self._metadata = FunctionMetadata(
            function_name=config.name,
            function_version=VERSION,
            handler=config.handler or "",
            account_id=config.account_id,
        )
        self._runtime_api = ""
        self._queue: asyncio.Queue[Invocation | _Job] = asyncio.Queue()
        self._getter: asyncio.Task[Invocation | _Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._current: Invocation | _Job | None = None
        self._between_jobs = asyncio.Event()
        self._forced: asyncio.Future[None] | None = None
        self._closed = False
        # Managed Instances: the invocations in flight, each with its follower.
        self._followers: dict[asyncio.Task[None], Invocation] = {}
        self._all_forced: asyncio.Future[None] | None = None

        self.slot: RuntimeSide
        if config.managed:
            self.slot = RuntimePool(config.timeout, reporter)
        else:
            self.slot = RuntimeSlot(
                config.timeout, reporter, snap_start=config.snap_start
            )
        self._env: Environment | None = None
        self._extensions: ExtensionRegistry | None = None
        self.tmpdir: str | None = None
        self.shutdowns: list[Shutdown] = []
        # Every process not yet reaped, so close() can wait for all of them
        # even if a reset was interrupted half way.
        self._processes: set[SandboxProcess] = set()
        self.starts = 0

    @property
    def extensions(self) -> ExtensionRegistry:
        """The registry the Extensions API serves (a closed one between envs)."""
        if self._extensions is None:
            self._extensions = ExtensionRegistry.closed(self._metadata)
        return self._extensions

    @property
    def pid(self) -> int | None:
        env = self._env
        if env is None or env.runtime is None or not env.runtime.alive:
            return None
        return env.runtime.pid

    @property
    def idle_pollers(self) -> int:
        return self.slot.idle_pollers

    async def wait_pollers(self, count: int) -> None:
        """Wait until ``count`` runtime pollers wait for an event at once."""
        if not isinstance(self.slot, RuntimePool):
            raise RuntimeError(
                "only a Managed Instances environment (max_concurrency) has "
                "several pollers; use wait_idle() otherwise"
            )
        await self.slot.wait_pollers(count)

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
        """Stop serving, answer everyone still waiting, spin the environment down."""
        self._closed = True
        current = self._current
        if isinstance(current, Invocation) and current.answered:
            # Its caller has the answer and the runtime is about to poll
            # again: a moment's grace keeps its REPORT (Ctrl-C right after an
            # answer). Longer post-response work is left to the SIGTERM.
            remaining = current.deadline - asyncio.get_running_loop().time()
            grace = max(0.0, min(remaining, _CLOSE_GRACE))
            try:
                await asyncio.wait_for(self._between_jobs.wait(), grace)
            except TimeoutError:
                pass
        if self._worker is not None:
            self._worker.cancel()
            # wait() rather than await: the worker's CancelledError is the
            # expected result here, not something to propagate or swallow.
            await asyncio.wait({self._worker})
            self._worker = None
        getter, self._getter = self._getter, None
        if getter is not None and getter.done() and not getter.cancelled():
            _abandon(getter.result())
            self._queue.task_done()
        elif getter is not None:
            getter.cancel()

        if self._current is not None:
            _abandon(self._current)
            self._current = None
        while not self._queue.empty():
            _abandon(self._queue.get_nowait())
            self._queue.task_done()
        followers = dict(self._followers)
        for task, invocation in followers.items():
            task.cancel()
            _abandon(invocation)
        if followers:
            await asyncio.wait(followers)

        await self._shutdown("spindown")
        for process in list(self._processes):
            await process.kill()
        self._remove_tmpdir()

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
        """Return once everything submitted so far has finished and been reported."""
        await self._queue.join()
        await self._drain_followers()

    async def _drain_followers(self) -> None:
        # Only the worker starts followers, and it is done with the queue.
        while self._followers:
            await asyncio.wait(list(self._followers))

    # -- testing controls --------------------------------------------------

    async def shutdown(
        self, reason: ShutdownReason = "spindown", budget_ms: float | None = None
    ) -> None:
        """End the environment through the shutdown phase, after queued work."""
        if reason not in SHUTDOWN_REASONS:
            choices = ", ".join(repr(r) for r in SHUTDOWN_REASONS)
            raise ValueError(f"reason must be one of {choices}, got {reason!r}")
        if budget_ms is not None and not budget_ms >= 0:
            raise ValueError(f"budget_ms must be 0 or more, got {budget_ms}")
        await self._control(self._after_followers(self._shutdown, reason, budget_ms))

    async def force_timeout(self) -> None:
        """Reset as a timeout does: the invocation in flight, if any, times out.

        Under Managed Instances every invocation in flight times out and the
        environment stays, as there.
        """
        if self._config.managed:
            forced, self._all_forced = self._all_forced, None
            if forced is not None:
                forced.set_result(None)
            await self._drain_followers()
            return
        env = self._env
        if self._forced is not None and not self._forced.done():
            self._forced.set_result(None)
        await self._control(lambda: self._reset_if_current(env, "timeout"))

    async def kill(self) -> None:
        """SIGKILL the runtime now, as a crash would, and reset (``failure``)."""
        env = self._env
        if env is not None and env.runtime is not None and env.runtime.alive:
            logger.info("killing runtime process %d on request", env.runtime.pid)
            env.signalled = "SIGKILL"
            await env.runtime.kill()
        await self._control(lambda: self._reset_if_current(env, "failure"))

    async def restart(self) -> None:
        """Replace the environment by a fresh one and wait until its init is done."""
        await self._control(self._after_followers(self._restart))

    def _after_followers(
        self, action: Callable[..., Awaitable[None]], *args: Any
    ) -> Callable[[], Awaitable[None]]:
        """``action(*args)`` once the invocations in flight have ended."""

        async def run() -> None:
            await self._drain_followers()
            await action(*args)

        return run

    async def _control(self, action: Callable[[], Awaitable[None]]) -> None:
        if self._closed:
            raise RuntimeError("the emulator is closed; create a new one")
        if self._worker is None:
            raise RuntimeError("the emulator is not started; await start() first")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(action, done))
        await asyncio.shield(done)

    async def _reset_if_current(
        self, env: Environment | None, reason: ShutdownReason
    ) -> None:
        # The environment the caller saw may already be gone (the invocation
        # in flight was reset); a newer one must not pay for it.
        if env is not None and env is self._env:
            await self._reset(reason)

    async def _restart(self) -> None:
        await self._shutdown("spindown")
        env, failure = await self._init()
        if failure is not None:
            await self._end_failed_init(env, failure)
            message = f"{failure.error_type}: {failure.detail or 'see the log'}"
            raise RuntimeError(f"the new environment failed to initialize: {message}")
        if self._freeze:
            env.freeze()

    # -- the worker --------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = self._current = await self._next_job()
            self._between_jobs.clear()
            try:
                if isinstance(job, Invocation):
                    await self._serve_safely(job)
                else:
                    await self._run(job)
            finally:
                self._queue.task_done()
            # Not cleared on cancellation: close() answers that caller.
            self._current = None
            self._forced = None
            self._between_jobs.set()

    async def _next_job(self) -> Invocation | _Job:
        """The next job; meanwhile watch the idle environment."""
        while True:
            if self._getter is None:
                self._getter = asyncio.create_task(self._queue.get())
            env = self._env
            watched: set[asyncio.Future[Any]] = {self._getter}
            timeout = None
            if env is not None:
                watched.update(env.exits())
                timeout = self._idle_shutdown
            done, _ = await asyncio.wait(
                watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if self._getter.done():
                getter, self._getter = self._getter, None
                return getter.result()
            if env is None or env is not self._env:
                continue
            if done:
                # Only an unfrozen (or killed) environment breaks while idle;
                # under Managed Instances the followers fail what was in flight.
                failure = self._breakage(env)
                logger.warning(
                    "the environment broke (%s: %s); resetting it",
                    failure.error_type if failure else "unknown",
                    failure.detail if failure else "",
                )
                await self._reset("failure")
            elif not self._followers:
                logger.info("idle for %s s: spinning the environment down", timeout)
                await self._shutdown("spindown")

    async def _run(self, job: _Job) -> None:
        try:
            await job.action()
        except Exception as exc:
            if not job.done.done():
                job.done.set_exception(exc)
        else:
            if not job.done.done():
                job.done.set_result(None)

    async def _serve_safely(self, invocation: Invocation) -> None:
        try:
            if self._config.managed:
                await self._dispatch(invocation)
            else:
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
            await self._reset("failure")

    async def _serve(self, invocation: Invocation) -> None:
        assert isinstance(self.slot, RuntimeSlot)
        loop = asyncio.get_running_loop()
        invocation.dispatched_at = loop.time()
        self._forced = loop.create_future()

        for attempt in range(2):
            ready = await self._ready_environment(invocation)
            if ready is None:
                return
            env, cold = ready

            # Hand the event over, INVOKE to the extensions, and follow it.
            env.thaw()
            self.slot.offer(invocation)
            if await self._await_handout(invocation, env):
                done = env.extensions.dispatch_invoke(invocation, self._config.arn)
                ended = await self._await_finish(invocation, env, done)
            elif not cold and attempt == 0 and self._died_idle(env):
                # It died before this event reached it (killed while idle, and
                # not reaped yet): Lambda would route the event to a new
                # sandbox, so it starts over, cold.
                logger.warning(
                    "the environment died before request %s reached it; "
                    "starting a new one",
                    invocation.request_id,
                )
                continue
            else:
                ended = self._cut_short(invocation, env)
            self._report(invocation, env, cold, ended)

            if ended.reset is not None:
                await self._reset(ended.reset)
            elif self._freeze:
                env.freeze()
            return

    async def _ready_environment(
        self, invocation: Invocation
    ) -> tuple[Environment, bool] | None:
        """The environment to serve ``invocation`` and whether it is cold.

        An environment that broke while idle is replaced first; a cold start
        times its init from the launch.  None when that init failed: the
        invocation has then been answered with the failure and reported.
        """
        env = self._env
        if env is not None and env.dead():
            await self._reset("failure")
            env = None
        if env is not None:
            return env, False
        env, failure = await self._init()
        if failure is not None:
            outcome = self._settle(invocation, failure)
            self._report(invocation, env, True, outcome)
            await self._end_failed_init(env, failure)
            return None
        return env, True

    def _died_idle(self, env: Environment) -> bool:
        forced = self._forced is not None and self._forced.done()
        return env.broken and not forced

    # -- Managed Instances -------------------------------------------------

    async def _dispatch(self, invocation: Invocation) -> None:
        """Hand the event to an idle poller and follow it apart, or refuse it."""
        assert isinstance(self.slot, RuntimePool)
        loop = asyncio.get_running_loop()
        invocation.dispatched_at = loop.time()

        ready = await self._ready_environment(invocation)
        if ready is None:
            return
        env, cold = ready

        # No queueing behind busy pollers: the caller is refused at once.
        if not self.slot.dispatch(invocation):
            concurrency = self._config.max_concurrency
            message = (
                f"RequestId: {invocation.request_id} Error: no runtime poller is "
                f"idle (all busy, AWS_LAMBDA_MAX_CONCURRENCY={concurrency}); "
                "retry once an invocation has finished"
            )
            logger.warning(
                "request %s refused: every poller is busy", invocation.request_id
            )
            invocation.settle(Answer.refusal(400, "Runtime.Unavailable", message))
            return

        if self._all_forced is None:
            self._all_forced = loop.create_future()
        follower = asyncio.create_task(
            self._follow(invocation, env, cold, self._all_forced),
            name=f"statefulrt-emulator-{invocation.request_id}",
        )
        self._followers[follower] = invocation
        follower.add_done_callback(self._followers.pop)

    async def _follow(
        self,
        invocation: Invocation,
        env: Environment,
        cold: bool,
        forced: asyncio.Future[None],
    ) -> None:
        """Wait for the answer (and its stream) to end, a breakage, or the deadline."""
        assert isinstance(self.slot, RuntimePool)
        loop = asyncio.get_running_loop()
        while not invocation.complete:
            if env.broken:
                self.slot.forget(invocation)
                failure = self._breakage(env) or self._timeout()
                # The worker resets the environment; this only answers.
                self._report(invocation, env, cold, self._settle(invocation, failure))
                return
            if forced.done() or loop.time() >= invocation.deadline:
                # LMI does not stop the code: the runtime stays, and its late
                # answer is refused with 410 InvokeTimeout.
                self.slot.time_out(invocation)
                outcome = self._settle(
                    invocation,
                    self._timeout(),
                    reset=False,
                    refusal=RuntimeAPIError.invoke_timeout(),
                )
                self._report(invocation, env, cold, outcome)
                return
            stream = invocation.stream
            pending = invocation.answer if stream is None else stream.ended
            await _first(loop, invocation.deadline, pending, forced, *env.exits())
        self._report(invocation, env, cold, _Outcome(_status(invocation), loop.time()))

    # -- init --------------------------------------------------------------

    async def _init(self) -> tuple[Environment, _Failure | None]:
        """Start an environment: external extensions, then the runtime."""
        loop = asyncio.get_running_loop()
        launched_at = loop.time()
        limit = launched_at + self._config.init_timeout
        tmpdir = self._ensure_tmpdir()
        listing: OSError | None = None
        try:
            files = self._extension_files()
        except OSError as exc:
            files, listing = [], exc
        registry = ExtensionRegistry(
            self._metadata,
            [name for name, _ in files],
            managed=self._config.managed,
        )
        env = self._env = Environment(registry, launched_at)
        self._extensions = registry
        if listing is not None:
            detail = f"cannot list {self._extensions_dir}: {listing.strerror}"
            return env, _Failure("error", "failure", "Extension.LaunchError", detail)
        if len(files) > MAX_EXTENSIONS:
            detail = f"{len(files)} extensions, Lambda allows {MAX_EXTENSIONS}"
            return env, _Failure("error", "failure", "Extension.LaunchError", detail)

        # External extensions start first and must all register before the
        # runtime starts, as on Lambda.
        environ = self._config.extension_environ(self._runtime_api, os.environ, tmpdir)
        for name, path in files:
            try:
                env.externals[name] = await self._spawn(
                    [path], environ, self._extensions_cwd
                )
            except OSError as exc:
                detail = f"cannot start extension {name}: {exc.strerror or exc}"
                failure = _Failure("error", "failure", "Extension.LaunchError", detail)
                return env, failure
        await self._wait(limit, env, registry.externals_registered)
        if not registry.externals_registered.done():
            return env, self._breakage(env) or self._timeout()

        # Then the runtime.
        environ = self._config.runtime_environ(self._runtime_api, os.environ, tmpdir)
        try:
            runtime = await self._spawn(self._command, environ, self._config.task_root)
        except OSError as exc:
            return env, self._unlaunchable(exc)
        env.runtime = runtime
        self.starts += 1
        self.slot.attach(env)
        logger.info(
            "runtime process %d started (start %d): %s",
            runtime.pid,
            self.starts,
            " ".join(self._command),
        )

        # Init ends once the runtime and every registered extension polled.
        await self._wait(limit, env, env.runtime_ready, env.init_error)
        if env.runtime_ready.done():
            ready = registry.wait_ready()
            await self._wait(limit, env, ready)
            if ready.done():
                env.init_ended_at = loop.time()
                if self._config.snap_start:
                    return env, await self._restore(env)
                return env, None
        if env.init_error.done():
            failure = _Failure(
                "error",
                "failure",
                env.init_error.result(),
                payload=env.init_error_payload,
            )
            return env, failure
        return env, self._breakage(env) or self._timeout()

    async def _restore(self, env: Environment) -> _Failure | None:
        """Snapshot and restore at once: the runtime's after-restore work, timed.

        The restore ends at the runtime's first ``/next``; a ``/restore/error``
        fails it like an init error (its payload goes to the caller).
        """
        assert isinstance(self.slot, RuntimeSlot)
        loop = asyncio.get_running_loop()
        self.slot.restore()
        limit = loop.time() + RESTORE_TIMEOUT
        await self._wait(limit, env, env.restored, env.restore_error)
        if env.restored.done():
            return None
        if env.restore_error.done():
            error_type = env.restore_error.result()
            payload = env.restore_error_payload
            detail = "the runtime reported a restore error"
            return _Failure("error", "failure", error_type, detail, payload)
        # NOTE(restore-timeout): Lambda reports this as the invoke API's
        # SnapStartTimeoutException; here it is a function error of that type.
        detail = f"the restore did not finish within {RESTORE_TIMEOUT:.0f} seconds"
        timeout = _Failure("timeout", "timeout", "SnapStartTimeoutException", detail)
        return self._breakage(env) or timeout

    async def _spawn(
        self, command: Sequence[str], environ: dict[str, str], cwd: str
    ) -> SandboxProcess:
        process = await SandboxProcess.spawn(command, env=environ, cwd=cwd)
        self._processes.add(process)
        process.exited.add_done_callback(lambda _: self._processes.discard(process))
        return process

    async def _wait(
        self, limit: float, env: Environment, *waitables: asyncio.Future[Any]
    ) -> None:
        """Wait for one of ``waitables``, a breakage, a forced timeout, or ``limit``."""
        loop = asyncio.get_running_loop()
        interrupts = [*env.exits()]
        if self._forced is not None:
            interrupts.append(self._forced)
        await _first(loop, limit, *waitables, *interrupts)

    async def _end_failed_init(self, env: Environment, failure: _Failure) -> None:
        if failure.payload is not None and env.runtime is not None:
            # The runtime is meant to exit by itself after an init error
            # (flushing its logs first), and is killed if it does not.
            loop = asyncio.get_running_loop()
            await _first(loop, loop.time() + _INIT_ERROR_EXIT_GRACE, env.runtime.exited)
        await self._reset(failure.reason)

    def _extension_files(self) -> list[tuple[str, str]]:
        """The executables Lambda would launch from ``/opt/extensions``, by name."""
        if self._extensions_dir is None:
            return []
        with os.scandir(self._extensions_dir) as entries:
            files = [
                (entry.name, entry.path)
                for entry in entries
                if entry.is_file() and os.access(entry.path, os.X_OK)
            ]
        return sorted(files)

    def _unlaunchable(self, exc: OSError) -> _Failure:
        logger.error(
            "cannot start the runtime %r: %s; check the command and its cwd",
            self._command[0],
            exc,
        )
        # Lambda words this the way Go's exec package reports it.
        reason = exc.strerror or str(exc)
        detail = f"fork/exec {self._command[0]}: {reason.lower()}"
        return _Failure("crash", "failure", "Runtime.InvalidEntrypoint", detail)

    # -- following an invocation -------------------------------------------

    async def _await_handout(self, invocation: Invocation, env: Environment) -> bool:
        """Wait for the runtime to take the event; False on a failure or timeout."""
        loop = asyncio.get_running_loop()
        limit = loop.time() + self._config.timeout
        await self._wait(limit, env, invocation.handed_out)
        return invocation.handed_out.done()

    async def _await_finish(
        self, invocation: Invocation, env: Environment, extensions: asyncio.Future[None]
    ) -> _Outcome:
        """Wait for the runtime and INVOKE extensions to poll again, or a failure."""
        loop = asyncio.get_running_loop()
        forced = self._forced
        ends = (invocation.finished, extensions)
        while not all(end.done() for end in ends):
            cut = forced is not None and forced.done()
            if cut or env.broken or loop.time() >= invocation.deadline:
                return self._cut_short(invocation, env)
            pending = [end for end in ends if not end.done()]
            await self._wait(invocation.deadline, env, *pending)
        return _Outcome(_status(invocation), loop.time())

    def _cut_short(self, invocation: Invocation, env: Environment) -> _Outcome:
        """End the invocation on a breakage, or else on a timeout."""
        return self._settle(invocation, self._breakage(env) or self._timeout())

    def _settle(
        self,
        invocation: Invocation,
        failure: _Failure,
        *,
        reset: bool = True,
        refusal: RuntimeAPIError | None = None,
    ) -> _Outcome:
        """Fail the caller (or cut its stream short) with ``failure``."""
        ended_at = asyncio.get_running_loop().time()
        logger.warning(
            "request %s failed (%s): %s%s",
            invocation.request_id,
            failure.error_type,
            failure.detail or "init error",
            "; resetting the environment" if reset else "",
        )
        if not invocation.settle(failure.answer(invocation.request_id)):
            stream = invocation.stream
            if stream is not None:
                message = failure.message(invocation.request_id)
                stream.cut(failure.error_type, message, refusal)
        return _Outcome(
            failure.status,
            ended_at,
            failure.reported_type,
            failure.reason if reset else None,
        )

    def _breakage(self, env: Environment) -> _Failure | None:
        """What broke in ``env``, if anything: the runtime, then extensions."""
        runtime = env.runtime
        if runtime is not None and not runtime.alive:
            code = runtime.returncode
            reason = exit_reason(code if code is not None else -9)
            detail = f"Runtime exited with error: {reason}"
            return _Failure("crash", "failure", "Runtime.ExitError", detail)
        dead = env.dead_extension()
        if dead is not None:
            name, process = dead
            code = process.returncode
            reason = exit_reason(code if code is not None else -9)
            # NOTE(extension-crash): Lambda's exact wording for this is not
            # published; the type is, and the message follows the runtime's.
            detail = f"Extension {name} exited with error: {reason}"
            return _Failure("crash", "failure", "Extension.Crash", detail)
        if env.extensions.failed.done():
            failed = env.extensions.failed.result()
            detail = f"Extension {failed.name} reported {failed.reported}"
            return _Failure("error", "failure", failed.error_type, detail)
        return None

    def _timeout(self) -> _Failure:
        detail = f"Task timed out after {self._config.timeout:.2f} seconds"
        return _Failure("timeout", "timeout", "Sandbox.Timedout", detail)

    def _report(
        self,
        invocation: Invocation,
        env: Environment,
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

        memory = 0
        if env.runtime is not None:
            env.runtime.sample_memory()
            memory = env.runtime.peak_rss_mb
        init_duration: float | None = None
        restore_duration: float | None = None
        if cold and env.restore_started_at is not None:
            # A restored sandbox reports its restore, not the init behind
            # the snapshot.
            restored_at = env.restore_ended_at or outcome.ended_at
            restore_duration = (restored_at - env.restore_started_at) * 1000
        elif cold:
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
                restore_duration_ms=restore_duration,
                status=outcome.status,
                error_type=None
                if error_type is None
                else platform_error_type(error_type),
            )
        )

    # -- the end of an environment -----------------------------------------

    async def _reset(self, reason: ShutdownReason) -> None:
        """End the environment after a failure; the temporary directory stays."""
        await self._shutdown(reason)

    async def _shutdown(
        self, reason: ShutdownReason, budget_ms: float | None = None
    ) -> None:
        env, self._env = self._env, None
        if env is not None:
            try:
                record = await shut_down(env, reason, budget_ms)
            finally:
                # The slot forgets the runtime only now: one draining after
                # SIGTERM keeps its /next open, as on Lambda.
                self.slot.detach()
                env.extensions.release_all()
                self._extensions = None
            self.shutdowns.append(record)
        if reason == "spindown":
            self._remove_tmpdir()

    def _ensure_tmpdir(self) -> str:
        if self.tmpdir is None:
            self.tmpdir = tempfile.mkdtemp(prefix="statefulrt-sandbox-")
        return self.tmpdir

    def _remove_tmpdir(self) -> None:
        tmpdir, self.tmpdir = self.tmpdir, None
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _status(invocation: Invocation) -> ReportStatus:
    """How an answered invocation went, for its REPORT line."""
    answer = invocation.answer.result()
    failed = answer.stream is not None and answer.stream.error is not None
    return "error" if answer.function_error or failed else "success"


def _abandon(job: Invocation | _Job) -> None:
    """Answer a job the emulator closed under."""
    if isinstance(job, Invocation):
        if not job.settle(_shutdown_answer()) and job.stream is not None:
            message = "The emulator shut down before the response was complete."
            job.stream.cut("ServiceException", message)
    elif not job.done.done():
        job.done.set_exception(RuntimeError("the emulator was closed first"))


def _shutdown_answer() -> Answer:
    message = "The emulator shut down before the invocation finished."
    return Answer.refusal(500, "ServiceException", message)


async def _first(
    loop: asyncio.AbstractEventLoop, limit: float, *waitables: asyncio.Future[Any]
) -> None:
    """Wait until one of ``waitables`` is done or the loop clock reaches ``limit``."""
    remaining = max(0.0, limit - loop.time())
    await asyncio.wait(
        waitables, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
    )
