"""The runtime's side of an execution environment, as RAPID tracks it.

A ``RuntimeSlot`` is what one polling runtime sees through the Runtime API:
its state, the invocation it holds, the ``/next`` request it has open. The
states and their names are RAPID's, because they appear verbatim in the 403
bodies a runtime receives::

    Started --next--> Ready --(event handed out)--> Running
    Running --response/error--> RuntimeResponseSentState --next--> Ready
    Started --init/error--> InitError

Polling ``/next`` again is what *finishes* an invocation: work done between
the answer and that poll is billed and bounded by the same deadline, as on
Lambda. The sandbox decides when to offer events and when to reset; the slot
only keeps the runtime's side of the conversation consistent. Managed
Instances will hold several slots, one per concurrent poller.
"""

from __future__ import annotations

import asyncio
import enum
import time

import orjson

from ._environment import Environment
from ._invocation import Answer, Invocation
from ._poll import Poll
from ._report import Reporter
from ._wire import MAX_PAYLOAD_BYTES, RuntimeAPIError, error_payload

__all__ = ["RuntimeSlot", "RuntimeState"]


class RuntimeState(enum.Enum):
    """The runtime's state, named as RAPID names it in its 403 messages."""

    STARTED = "Started"
    INIT_ERROR = "InitError"
    READY = "Ready"
    RUNNING = "Running"
    RESPONSE_SENT = "RuntimeResponseSentState"


class RuntimeSlot:
    """One runtime poller's conversation with the Runtime API."""

    def __init__(self, timeout: float, reporter: Reporter) -> None:
        self._timeout = timeout
        self._reporter = reporter
        self.state = RuntimeState.STARTED
        self.env: Environment | None = None
        self.current: Invocation | None = None
        self._pending: Invocation | None = None
        self._poll: Poll[Invocation] | None = None

    # -- driven by the sandbox ---------------------------------------------

    def attach(self, env: Environment) -> None:
        """Bind a freshly started runtime process to this slot."""
        self.env = env
        if self.state is RuntimeState.READY and self._poll and self._poll.live:
            # The runtime polled /next before its spawn() call returned.
            env.end_runtime_init()

    def detach(self) -> Environment | None:
        """Reset to ``Started`` and hand back the environment to be killed."""
        env, self.env = self.env, None
        self.state = RuntimeState.STARTED
        self.current = self._pending = None
        poll, self._poll = self._poll, None
        if poll is not None:
            poll.release()
        return env

    def offer(self, invocation: Invocation) -> None:
        """Make ``invocation`` current: hand it out now or at the next poll."""
        self.current = invocation
        poll, self._poll = self._poll, None
        if poll is not None and poll.live:
            self._hand_out(invocation)
            poll.deliver(invocation)
            return
        if poll is not None:
            poll.release()
        self._pending = invocation

    def _hand_out(self, invocation: Invocation) -> None:
        invocation.handed_at = asyncio.get_running_loop().time()
        invocation.deadline = invocation.handed_at + self._timeout
        deadline_ms = int(time.time() * 1000) + round(self._timeout * 1000)
        invocation.deadline_ms = deadline_ms
        self.state = RuntimeState.RUNNING
        invocation.handed_out.set_result(None)
        self._reporter.start(invocation.request_id)

    def _sample_memory(self) -> None:
        # Peak memory can only be read from a live process, so every call
        # the runtime makes is a chance to read it before a crash hides it.
        if self.env is not None and self.env.runtime is not None:
            self.env.runtime.sample_memory()

    # -- driven by the runtime ---------------------------------------------

    async def next(self, transport: asyncio.BaseTransport | None) -> Invocation:
        """``GET /runtime/invocation/next``: block until there is an event."""
        poll = self._poll
        if poll is not None and not poll.future.done():
            if not poll.stale:
                raise RuntimeAPIError.transition(self.state.value, "Ready")
            poll.release()
        if self.state in (RuntimeState.RUNNING, RuntimeState.INIT_ERROR):
            raise RuntimeAPIError.transition(self.state.value, "Ready")
        self._sample_memory()

        # Polling again is what ends init, or ends the previous invocation.
        if self.state is RuntimeState.STARTED and self.env is not None:
            self.env.end_runtime_init()
        if self.state is RuntimeState.RESPONSE_SENT and self.current is not None:
            self.current.finished.set_result(None)
        self.state = RuntimeState.READY

        pending, self._pending = self._pending, None
        if pending is not None:
            self._hand_out(pending)
            return pending

        poll = self._poll = Poll.open(transport)
        try:
            invocation = await poll.future
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
        self.state = RuntimeState.RESPONSE_SENT
        self._sample_memory()

        if mode is not None and mode != "streaming":
            message = (
                f"RequestId: {request_id} Error: Lambda-Runtime-Function-Response-"
                f"Mode must be 'streaming' when present, got {mode!r}"
            )
            failure = Answer.failure("Runtime.InvalidResponseModeHeader", message)
            invocation.settle(failure)
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
        self.state = RuntimeState.RESPONSE_SENT
        self._sample_memory()
        payload = error_payload(body, error_type)
        invocation.settle(Answer(payload, function_error="Unhandled"))

    def init_error(
        self, body: bytes | None, *, error_type: str | None, limit: int
    ) -> None:
        """``POST /runtime/init/error``: fail init and answer the waiting caller."""
        if self.state is not RuntimeState.STARTED:
            raise RuntimeAPIError.transition(self.state.value, "InitError")
        if body is None:
            raise RuntimeAPIError.too_large(limit)
        self.state = RuntimeState.INIT_ERROR
        self._sample_memory()

        # Lambda serves the init error as the result of the pending invoke;
        # the sandbox hands it to that caller.
        payload = error_payload(body, error_type)
        if self.env is not None:
            reported = error_type or orjson.loads(payload).get("errorType")
            self.env.fail_init(str(reported or "Runtime.Unknown"), payload)

    def _claim(self, request_id: str, target: str) -> Invocation:
        invocation = self.current
        answerable = (RuntimeState.RUNNING, RuntimeState.RESPONSE_SENT)
        if (
            invocation is None
            or invocation.request_id != request_id
            or self.state not in answerable
        ):
            raise RuntimeAPIError.invalid_request_id()
        if self.state is RuntimeState.RESPONSE_SENT:
            raise RuntimeAPIError.transition(self.state.value, target)
        return invocation
