"""The runtime loop: init once, then next → handle → answer → flush, forever.

Lifecycle::

    start → init ──(init error: report, exit 1)
              │
              ▼
           ready ⇄ invoking → post-response work (flush policy) → ready
              │
          SIGTERM / SIGINT
              ▼
           draining (finish in-flight invocations, final flush, close()) → closed

Every invocation is answered exactly once whatever the handler does; only a
Runtime API that stays unreachable or answers ``next`` with an error ends the
loop, with a log line saying why and a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import _snapstart as snapstart
from . import _wire as wire
from ._client import USER_AGENT, RuntimeApiClient
from ._config import RuntimeConfig
from ._diagnostic import ErrorPayload, describe
from ._exceptions import (
    HandlerLoadError,
    ResourceUnavailable,
    RuntimeApiError,
    RuntimeApiUnavailable,
)
from ._extensions import InternalExtension
from ._flush import Flusher
from ._handler import HandlerAdapter, StatefulHandler, active_state
from ._invocation import Context, Invocation, current_invocation
from ._loader import load_handler
from ._log import TRACE, invoke_logger, runtime_logger
from ._marshal import decode_event, encode_result
from ._state import State
from ._streaming import StreamingResponse, as_streaming, post_stream

EXIT_OK = 0
EXIT_INIT_ERROR = 1
EXIT_API_FAILURE = 2

# A flush must be expected to finish this long before the deadline to start.
FLUSH_DEADLINE_MARGIN = 0.2
# Tenant journals kept open; idle ones beyond this close their descriptors.
MAX_OPEN_TENANT_JOURNALS = 64

if TYPE_CHECKING:
    from ._metrics import LifecycleMetrics

_SignalHandler = Callable[[int, FrameType | None], Any]

# The Runtime API client of the poller running in the current task.
poller_client: ContextVar[RuntimeApiClient] = ContextVar("statefulrt_poller_client")


class Runtime:
    """Owns the event loop's work for the life of the process."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        client: RuntimeApiClient | None = None,
        environ: MutableMapping[str, str] | None = None,
        handler: object | None = None,
        install_signals: bool = True,
        register_extension: bool = True,
    ) -> None:
        self.config = config
        self.client = client or RuntimeApiClient(config.runtime_api)
        self._environ = os.environ if environ is None else environ
        self._handler_override = handler
        self._install_signals = install_signals
        self.extension = (
            InternalExtension(config.runtime_api, user_agent=USER_AGENT)
            if register_extension
            else None
        )
        self.adapter: HandlerAdapter | None = None
        # one flusher (state, journal, retry) per tenant; None: no tenant
        self.flushers: dict[str | None, Flusher] = {}
        self.max_pending_bytes: int | None = None
        self.max_pending_items: int | None = None
        self.invocations = 0
        self._stopping = asyncio.Event()
        self._idle_pollers: set[asyncio.Task[None]] = set()
        self._user_signal_handlers: dict[int, _SignalHandler] = {}
        # what _X_AMZN_TRACE_ID was last set to ("" before the first event,
        # so that one always brings the variable in line)
        self._trace_id: str | None = ""

    @property
    def flusher(self) -> Flusher | None:
        """The flusher of the state that serves invocations without a tenant."""
        return self.flushers.get(None)

    async def run(self) -> int:
        """Run until shutdown; returns the process exit code."""
        started = time.perf_counter()
        if not await self._init():
            await self.client.aclose()
            return EXIT_INIT_ERROR
        # Extensions register during init, before the snapshot and the first
        # `next`; this one is what makes Lambda send SIGTERM at shutdown.
        if self.extension is not None:
            await self.extension.register()
        if self.config.initialization_type == "snap-start":
            exit_code = await self._snapshot_and_restore()
            if exit_code is not None:
                if self.extension is not None:
                    await self.extension.aclose()
                await self.client.aclose()
                return exit_code
        init_ms = (time.perf_counter() - started) * 1000
        metrics = self._metrics()
        if metrics is not None:
            metrics.init_done(init_ms)
            for flusher in self.flushers.values():
                flusher.metrics = metrics
        runtime_logger.info(
            "init done in %.1f ms (handler %s, %d poller%s)",
            init_ms,
            self.config.handler,
            self.config.max_concurrency,
            "" if self.config.max_concurrency == 1 else "s",
        )

        self._install_signal_handlers()
        clients = [self.client]
        clients += [self.client.spawn() for _ in range(self.config.max_concurrency - 1)]
        pollers = [
            asyncio.create_task(self._poll(client), name=f"statefulrt-poller-{n}")
            for n, client in enumerate(clients)
        ]
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                [*pollers, stop], return_when=asyncio.FIRST_COMPLETED
            )
            exit_code = EXIT_OK
            for task in done:
                if task is not stop and task.exception() is not None:
                    exit_code = self._report_fatal(task.exception())
            await self._drain(pollers)
        finally:
            stop.cancel()
            self._restore_signal_handlers()
            if self.extension is not None:
                await self.extension.aclose()
            for client in clients:
                await client.aclose()
        return exit_code

    def request_shutdown(self, reason: str = "requested") -> None:
        """Stop polling; in-flight invocations finish, then flush and close."""
        if self._stopping.is_set():
            return
        runtime_logger.info("shutdown (%s): draining", reason)
        self._stopping.set()
        for task in list(self._idle_pollers):
            task.cancel()

    # -- init -------------------------------------------------------------------

    async def _init(self) -> bool:
        try:
            target = self._handler_override
            if target is None:
                target = load_handler(self.config.handler, self.config.task_root)
            self.adapter = HandlerAdapter(
                target, max_workers=self.config.max_concurrency
            )
            stateful = self.adapter.stateful
            if stateful is not None:
                self._prepare_state(stateful)
            await self.adapter.init()
            if stateful is not None:
                # init() may have chosen the policy from its configuration
                for flusher in self.flushers.values():
                    flusher.policy = stateful.flush_policy
        except HandlerLoadError as exc:
            error = ErrorPayload(
                error_type=exc.error_type,
                error_message=describe(exc),
                stack_trace=tuple(exc.stack_trace),
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the user's init: anything may come out
            error = ErrorPayload.from_exception(exc)
        else:
            return True

        runtime_logger.error(
            "init failed: %s: %s", error.error_type, error.error_message
        )
        try:
            await self.client.post_init_error(error)
        except (RuntimeApiError, RuntimeApiUnavailable) as exc:
            runtime_logger.error("could not report the init error: %s", exc)
        return False

    async def _snapshot_and_restore(self) -> int | None:
        stateful = self.adapter.stateful if self.adapter else None
        before = snapstart.before_snapshot(stateful)
        if not await self._hooks(before, snapstart.BEFORE_SNAPSHOT_ERROR):
            return snapstart.EXIT_BEFORE_SNAPSHOT

        await self.client.restore_next()
        after = snapstart.after_restore(stateful)
        if not await self._hooks(after, snapstart.AFTER_RESTORE_ERROR):
            return snapstart.EXIT_AFTER_RESTORE
        runtime_logger.info("restored from the snapshot")
        return None

    async def _hooks(self, hooks: Awaitable[None], error_type: str) -> bool:
        """Run SnapStart hooks; report a failure where Lambda expects it."""
        try:
            await hooks
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the user's hooks: anything may come out
            error = ErrorPayload.from_exception(exc, error_type=error_type)
            runtime_logger.error("%s: %s", error_type, error.error_message)
            if error_type == snapstart.BEFORE_SNAPSHOT_ERROR:
                await self.client.post_init_error(error)
            else:
                await self.client.post_restore_error(error)
            return False
        return True

    def _prepare_state(self, handler: StatefulHandler) -> None:
        self.flushers[None] = open_state(
            handler,
            handler.state,
            journal_dir=self.config.journal_dir,
            function_name=self.config.function_name,
        )

        self.max_pending_bytes = handler.max_pending_bytes
        if self.max_pending_bytes is None:
            self.max_pending_bytes = self.config.memory_size_mb * 1024 * 1024 // 4
        self.max_pending_items = handler.max_pending_items

    def _flusher_for(self, handler: StatefulHandler, tenant_id: str | None) -> Flusher:
        flusher = self.flushers.get(tenant_id)
        if flusher is not None:
            if tenant_id is not None:
                # most recently served last, for _rest_idle_tenants
                self.flushers[tenant_id] = self.flushers.pop(tenant_id)
            return flusher

        flusher = open_state(
            handler,
            State(),
            journal_dir=self.config.journal_dir,
            function_name=self.config.function_name,
            tenant_id=tenant_id,
        )
        flusher.metrics = handler.metrics
        self.flushers[tenant_id] = flusher
        self._rest_idle_tenants()
        return flusher

    def _rest_idle_tenants(self) -> None:
        # Lambda serves one tenant per environment, but nothing stops a caller
        # from naming thousands: the least recently served tenants close
        # their journal's file descriptor (their state stays, and the journal
        # reopens for append on their next event; what they appended was
        # synced before its answer).
        tenants = [tenant for tenant in self.flushers if tenant is not None]
        for tenant in tenants[: max(len(tenants) - MAX_OPEN_TENANT_JOURNALS, 0)]:
            journal = self.flushers[tenant].state.journal
            if journal is not None:
                journal.close()

    # -- the loop ---------------------------------------------------------------

    async def _poll(self, client: RuntimeApiClient) -> None:
        # each poller task answers on its own connection
        poller_client.set(client)
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping.is_set():
            self._idle_pollers.add(task)
            try:
                invocation = await client.next_invocation()
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    return  # cancelled while idle: shutting down
                raise
            except ValueError as exc:
                invoke_logger.error(
                    "dropping an event that cannot be answered: %s", exc
                )
                continue
            finally:
                self._idle_pollers.discard(task)

            # Busy pollers are never cancelled: a shutdown waits for the answer.
            await self._invoke(invocation)

    async def _invoke(self, invocation: Invocation) -> None:
        assert self.adapter is not None
        self.invocations += 1
        token = current_invocation.set(invocation)
        self._set_trace_id(invocation.trace_id)
        stateful = self.adapter.stateful
        flusher = None
        if stateful is not None:
            try:
                flusher = self._flusher_for(stateful, invocation.tenant_id)
            except OSError as exc:  # its journal cannot be opened, say
                current_invocation.reset(token)
                await self._fail(
                    invocation.request_id,
                    ErrorPayload.from_exception(
                        exc,
                        invocation.request_id,
                        error_type=wire.ErrorType.RESOURCE_UNAVAILABLE,
                        message_prefix="the state of this invocation cannot be "
                        "opened: ",
                    ),
                )
                return
        state_token = active_state.set(flusher.state if flusher else None)
        try:
            if stateful is not None and stateful.metrics is not None:
                idle = stateful.resources.idle_seconds()
                stateful.metrics.invocation(
                    "cold"
                    if self.invocations == 1
                    else "thawed"
                    if idle >= stateful.resources.revalidate_after
                    else "warm"
                )
            context = Context(
                invocation,
                self.config,
                index=self.invocations,
                resources=stateful.resources if stateful else None,
                state=flusher.state if flusher else None,
            )
            for warning in context.warnings:
                invoke_logger.warning("%s", warning)
            invoke_logger.log(TRACE, "invoke %s", invocation.request_id)
            pipelined = await self._answer(invocation, context, flusher)
            if flusher is not None:
                await self._after_response(invocation, flusher, flush=not pipelined)
        finally:
            active_state.reset(state_token)
            current_invocation.reset(token)

    async def _answer(
        self, invocation: Invocation, context: Context, flusher: Flusher | None
    ) -> bool:
        """Answer the invocation; True when the next `next` went out with it."""
        assert self.adapter is not None
        request_id = invocation.request_id

        refusal = self._backpressure(flusher)
        if refusal is not None:
            await self._fail(
                request_id,
                ErrorPayload(
                    error_type=wire.ErrorType.BACKPRESSURE,
                    error_message=refusal,
                    request_id=request_id,
                ),
            )
            return False

        if self.adapter.stateful is not None:
            try:
                await self.adapter.stateful.resources.before_invoke()
            except ResourceUnavailable as exc:
                await self._fail(
                    request_id,
                    ErrorPayload(
                        error_type=wire.ErrorType.RESOURCE_UNAVAILABLE,
                        error_message=describe(exc),
                        request_id=request_id,
                    ),
                )
                return False

        try:
            event = decode_event(invocation.body, invocation.content_type)
        except ValueError as exc:
            await self._fail(
                request_id,
                ErrorPayload(
                    error_type=wire.ErrorType.UNMARSHAL_ERROR,
                    error_message=f"Unable to unmarshal input: {describe(exc)}",
                    request_id=request_id,
                ),
            )
            return False

        try:
            result = await self.adapter.call(event, context)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            await self._fail(request_id, ErrorPayload.from_exception(exc, request_id))
            return False
        except BaseException as exc:  # the user's code: anything may come out
            await self._fail(request_id, ErrorPayload.from_exception(exc, request_id))
            return False
        finally:
            journal = flusher.state.journal if flusher else None
            if journal is not None:
                journal.sync()  # before the answer: that is the promise
            # The idle time starts here, before any answer goes out: once the
            # next poll leaves (with the answer, when pipelined) the sandbox
            # may freeze, and code after that runs only at the next thaw.
            if self.adapter.stateful is not None:
                self.adapter.stateful.resources.after_invoke()

        if not await self._sync_flush(request_id, flusher):
            return False

        streaming = as_streaming(result)
        if streaming is not None:
            await self._stream(request_id, streaming)
            return False

        try:
            body, content_type = encode_result(result)
        except (TypeError, ValueError) as exc:
            await self._fail(
                request_id,
                ErrorPayload(
                    error_type=wire.ErrorType.MARSHAL_ERROR,
                    error_message=f"Unable to marshal response: {describe(exc)}",
                    request_id=request_id,
                ),
            )
            return False

        if len(body) > wire.MAX_RESPONSE_BYTES:
            await self._fail(
                request_id,
                ErrorPayload(
                    error_type=wire.ErrorType.RESPONSE_TOO_LARGE,
                    error_message=(
                        f"Response payload size ({len(body)} bytes) exceeded "
                        "maximum allowed payload size "
                        f"({wire.MAX_RESPONSE_BYTES} bytes)."
                    ),
                    request_id=request_id,
                ),
            )
            return False
        # Nothing to do after the answer: the next `next` leaves with it (one
        # write, one wake-up less), since the sandbox may freeze once Lambda
        # has it.
        then_next = self._nothing_due(flusher)
        await poller_client.get(self.client).post_response(
            request_id, body, content_type, then_next=then_next
        )
        return then_next

    async def _stream(self, request_id: str, response: StreamingResponse) -> None:
        chunks = response.chunks()
        try:
            first = await anext(chunks, b"")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # before the first byte: a plain error
            await self._fail(request_id, ErrorPayload.from_exception(exc, request_id))
            return
        try:
            status, error = await post_stream(
                self.config.runtime_api, request_id, response, first, chunks
            )
        except OSError as exc:
            invoke_logger.error("streaming the response failed: %s", exc)
            return
        if error is not None:
            invoke_logger.error(
                "%s: %s (after part of the response was streamed)\n%s",
                error.error_type,
                error.error_message,
                "".join(error.stack_trace).rstrip("\n"),
            )
        if status >= 300:
            invoke_logger.warning("the streamed response was refused with %d", status)

    def _backpressure(self, flusher: Flusher | None) -> str | None:
        if flusher is None:
            return None
        state = flusher.state
        too_many = (
            self.max_pending_items is not None
            and state.pending_items >= self.max_pending_items
        )
        too_big = (
            self.max_pending_bytes is not None
            and state.pending_bytes >= self.max_pending_bytes
        )
        if not (too_many or too_big):
            return None
        return (
            f"{state.pending_items} items ({state.pending_bytes} bytes) are waiting "
            "for a flush that keeps failing; refusing new events until it "
            "succeeds. Retry later."
        )

    async def _sync_flush(self, request_id: str, flusher: Flusher | None) -> bool:
        stateful = self.adapter.stateful if self.adapter else None
        if stateful is None or stateful.durability != "sync" or flusher is None:
            return True
        if flusher.state.pending_items == 0 or await flusher.flush("sync"):
            return True
        await self._fail(
            request_id,
            ErrorPayload(
                error_type=wire.ErrorType.FLUSH_FAILED,
                error_message=(
                    "the flush covering this invocation failed; its data stays "
                    "buffered and will be retried, so a retry of this event "
                    "should use a de-duplication key"
                ),
                request_id=request_id,
            ),
        )
        return False

    async def _fail(self, request_id: str, error: ErrorPayload) -> None:
        invoke_logger.error(
            "%s: %s\n%s",
            error.error_type,
            error.error_message,
            "".join(error.stack_trace).rstrip("\n"),
        )
        await poller_client.get(self.client).post_error(request_id, error)

    def _nothing_due(self, flusher: Flusher | None) -> bool:
        """No post-response work for this invocation: no flush, no retry."""
        if self._stopping.is_set():
            return False
        if flusher is None:
            return True
        return not flusher.retry_pending and flusher.policy.due(flusher.state) is None

    async def _after_response(
        self, invocation: Invocation, flusher: Flusher, *, flush: bool = True
    ) -> None:
        # Post-response work: billed, but the caller already has its answer.
        # Without `flush`, the `next` already went out: only the metrics.
        if not flush:
            self._report_boundary(flusher)
            return
        budget = None
        if self.config.max_concurrency == 1:
            # Managed Instances do not stop late code, so only the classic
            # mode budgets against the deadline
            remaining = invocation.deadline_ms / 1000 - time.time()
            budget = remaining - FLUSH_DEADLINE_MARGIN
        await flusher.at_boundary(budget=budget)
        self._report_boundary(flusher)

    def _report_boundary(self, flusher: Flusher) -> None:
        metrics = self._metrics()
        if metrics is not None:
            state = flusher.state
            metrics.boundary(state.pending_items, state.pending_bytes)

    def _metrics(self) -> LifecycleMetrics | None:
        stateful = self.adapter.stateful if self.adapter else None
        return stateful.metrics if stateful is not None else None

    def _set_trace_id(self, trace_id: str | None) -> None:
        # The variable is process-wide: only meaningful with one invocation
        # at a time.
        if self.config.max_concurrency != 1 or trace_id == self._trace_id:
            return  # unchanged since the last invocation: two lookups saved
        if trace_id:
            self._environ[wire.TRACE_ENV] = trace_id
        elif wire.TRACE_ENV in self._environ:
            del self._environ[wire.TRACE_ENV]
        self._trace_id = trace_id

    # -- shutdown ---------------------------------------------------------------

    async def _drain(self, pollers: list[asyncio.Task[None]]) -> None:
        self.request_shutdown("loop ended")
        await asyncio.gather(*pollers, return_exceptions=True)

        for tenant_id, flusher in self.flushers.items():
            if flusher.policy.on_shutdown:
                await self._final_flush(tenant_id, flusher)
        if self.adapter is not None:
            try:
                await self.adapter.close()
            except Exception as exc:
                runtime_logger.error("close() failed: %s", describe(exc), exc_info=exc)
        for flusher in self.flushers.values():
            journal = flusher.state.journal
            if journal is not None:
                journal.close()
                journal.unlock()
        runtime_logger.info("closed after %d invocations", self.invocations)

    async def _final_flush(self, tenant_id: str | None, flusher: Flusher) -> None:
        # A sink that fails now gets retried, quickly, until the budget runs
        # out: there is no later boundary to wait for.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_budget_ms / 1000
        token = active_state.set(flusher.state)
        delay = 0.01
        try:
            while (remaining := deadline - loop.time()) > 0:
                try:
                    if await asyncio.wait_for(flusher.flush("shutdown"), remaining):
                        return
                except TimeoutError:
                    break
                await asyncio.sleep(min(delay, max(deadline - loop.time(), 0)))
                delay *= 2
        finally:
            active_state.reset(token)
        runtime_logger.warning(
            "the shutdown flush%s did not succeed within %d ms; %d items stay %s",
            "" if tenant_id is None else " of a tenant",
            self.config.shutdown_budget_ms,
            flusher.state.pending_items,
            "in the journal" if flusher.state.journal else "unflushed and are lost",
        )

    def _report_fatal(self, exc: BaseException | None) -> int:
        if isinstance(exc, RuntimeApiUnavailable):
            runtime_logger.critical("exiting: %s", exc)
        elif isinstance(exc, RuntimeApiError):
            runtime_logger.critical(
                "exiting: the Runtime API refused the runtime: %s", exc
            )
        else:
            runtime_logger.critical("exiting: unexpected failure", exc_info=exc)
        return EXIT_API_FAILURE

    def _install_signal_handlers(self) -> None:
        if not self._install_signals:
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if callable(previous) and previous is not signal.default_int_handler:
                # a handler the user installed still runs, after ours starts
                # the drain
                self._user_signal_handlers[signum] = previous
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _restore_signal_handlers(self) -> None:
        if not self._install_signals:
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        self.request_shutdown(signal.Signals(signum).name)
        user_handler = self._user_signal_handlers.get(signum)
        if user_handler is not None:
            try:
                user_handler(signum, None)
            except Exception as exc:
                runtime_logger.error(
                    "the %s handler installed by the function failed: %s",
                    signal.Signals(signum).name,
                    describe(exc),
                )


# How long an init waits for a companion extension still rescuing the journal.
JOURNAL_LOCK_WAIT = 5.0


def open_state(
    handler: StatefulHandler,
    state: State,
    *,
    journal_dir: str,
    function_name: str,
    tenant_id: str | None = None,
) -> Flusher:
    """Attach the journal (for journal-mode handlers) and build the flusher.

    What a previous process left in the journal is loaded into the handler's
    state, and a flush it had started is set up to be retried first.
    """
    replay = None
    if handler.durability == "journal":
        from ._journal import Journal, journal_path

        # one journal per function and handler class, in the sandbox's
        # temporary directory, which outlives a killed runtime
        journal = Journal(
            journal_path(journal_dir, function_name, type(handler).__name__, tenant_id),
            fsync=handler.journal_fsync,
        )
        # The lock keeps the companion extension off a journal a live runtime
        # holds; it rescues only the journal without a tenant.
        if tenant_id is None and not journal.lock(JOURNAL_LOCK_WAIT):
            runtime_logger.warning(
                "journal %s stayed locked for %.0f s; using it anyway",
                journal.path,
                JOURNAL_LOCK_WAIT,
            )
        replay = journal.replay()
        state.journal = journal
        state._restore(replay)

    flusher = Flusher(state, handler.flush_policy, handler.flush_hooks())
    flusher.tenant_id = tenant_id
    if replay is not None:
        flusher.restore(replay)
        if replay.items:
            runtime_logger.info(
                "journal replayed: %d items pending since flush %d",
                len(replay.items),
                replay.epoch,
            )
    return flusher
