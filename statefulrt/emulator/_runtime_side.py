"""What the Runtime API routes drive: the runtime's side of an environment.

Two shapes exist. ``RuntimeSlot`` is Lambda's default: one poller, whose
state RAPID tracks and names in its 403 bodies. ``RuntimePool`` is Managed
Instances: any number of concurrent pollers, correlated with their
invocations by request id alone. Both answer the same calls; this module holds
the states and the parts they share.
"""

from __future__ import annotations

import asyncio
import enum
import time
from typing import Final

import orjson

from ._environment import Environment
from ._invocation import Answer, Invocation
from ._report import Reporter
from ._response_stream import ResponseStream
from ._wire import MAX_PAYLOAD_BYTES, RuntimeAPIError, error_payload

__all__ = ["STREAM_CONTENT_TYPE", "RuntimeSide", "RuntimeState", "reported_error_type"]

# A streamed response without a Content-Type, as the LMI RIE labels it.
STREAM_CONTENT_TYPE: Final = "application/octet-stream"


class RuntimeState(enum.Enum):
    """The runtime's state, named as RAPID names it in its 403 messages."""

    STARTED = "Started"
    INIT_ERROR = "InitError"
    READY = "Ready"
    RUNNING = "Running"
    RESPONSE_SENT = "RuntimeResponseSentState"
    RESTORE_READY = "RestoreReady"
    RESTORING = "Restoring"
    RESTORE_ERROR = "RuntimeRestoreErrorState"


class RuntimeSide:
    """The calls a runtime makes, and what the two shapes share."""

    def __init__(self, timeout: float, reporter: Reporter) -> None:
        self._timeout = timeout
        self._reporter = reporter
        self.state = RuntimeState.STARTED
        self.env: Environment | None = None

    # -- driven by the sandbox ---------------------------------------------

    def attach(self, env: Environment) -> None:
        """Bind a freshly started runtime process."""
        self.env = env

    def detach(self) -> Environment | None:
        """Forget the runtime, answer its waiting polls with a 500."""
        env, self.env = self.env, None
        self.state = RuntimeState.STARTED
        return env

    @property
    def idle_pollers(self) -> int:
        """How many ``/next`` polls are waiting for an event."""
        return 0

    # -- driven by the runtime ---------------------------------------------

    async def next(self, transport: asyncio.BaseTransport | None) -> Invocation:
        """``GET /runtime/invocation/next``: block until there is an event."""
        raise NotImplementedError

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
        self._sample_memory()
        if mode is not None and mode != "streaming":
            message = (
                f"RequestId: {request_id} Error: Lambda-Runtime-Function-Response-"
                f"Mode must be 'streaming' when present, got {mode!r}"
            )
            invocation.fail("Runtime.InvalidResponseModeHeader", message)
            raise RuntimeAPIError.invalid_response_mode()
        if body is None:
            message = (
                "Response payload size exceeded maximum allowed payload size "
                f"({MAX_PAYLOAD_BYTES} bytes)."
            )
            invocation.fail("Function.ResponseSizeTooLarge", message)
            raise RuntimeAPIError.too_large(MAX_PAYLOAD_BYTES)
        invocation.settle(Answer(body, content_type or "application/json"))

    def open_stream(self, request_id: str, content_type: str | None) -> ResponseStream:
        """A streaming ``/response`` began: the caller is answered with its stream."""
        invocation = self._claim(request_id, "InvocationResponse")
        self._sample_memory()
        stream = ResponseStream(
            content_type or STREAM_CONTENT_TYPE, invocation.stream_limit
        )
        invocation.settle(Answer(b"", stream.content_type, stream=stream))
        return stream

    def error(
        self, request_id: str, body: bytes | None, *, error_type: str | None, limit: int
    ) -> None:
        """``POST /runtime/invocation/{id}/error``; ``body`` None if too big."""
        if body is None:
            # The invocation stays open: the runtime may still post a
            # smaller error, or be timed out.
            self._check(request_id, "InvocationErrorResponse")
            raise RuntimeAPIError.too_large(limit)
        invocation = self._claim(request_id, "InvocationErrorResponse")
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
            self.env.fail_init(reported_error_type(payload, error_type), payload)

    async def restore_next(self, transport: asyncio.BaseTransport | None) -> None:
        """``GET /runtime/restore/next`` (SnapStart only)."""
        raise RuntimeAPIError.transition(self.state.value, "RestoreReady")

    def restore_error(
        self, body: bytes | None, *, error_type: str | None, limit: int
    ) -> None:
        """``POST /runtime/restore/error`` (SnapStart only)."""
        raise RuntimeAPIError.transition(self.state.value, "RuntimeRestoreErrorState")

    # -- shared steps ------------------------------------------------------

    def _check(self, request_id: str, target: str) -> Invocation:
        """The invocation ``request_id`` names, if the runtime may answer it."""
        raise NotImplementedError

    def _claim(self, request_id: str, target: str) -> Invocation:
        """Like ``_check``, and the invocation counts as answered from now on."""
        raise NotImplementedError

    def _hand_out(self, invocation: Invocation) -> None:
        invocation.handed_at = asyncio.get_running_loop().time()
        invocation.deadline = invocation.handed_at + self._timeout
        deadline_ms = int(time.time() * 1000) + round(self._timeout * 1000)
        invocation.deadline_ms = deadline_ms
        invocation.handed_out.set_result(None)
        self._reporter.start(invocation.request_id)

    def _sample_memory(self) -> None:
        # Peak memory can only be read from a live process, so every call
        # the runtime makes is a chance to read it before a crash hides it.
        if self.env is not None and self.env.runtime is not None:
            self.env.runtime.sample_memory()


def reported_error_type(payload: bytes, error_type: str | None) -> str:
    """The error type a runtime reported: its header, else its document's."""
    reported = error_type or orjson.loads(payload).get("errorType")
    return str(reported or "Runtime.Unknown")
