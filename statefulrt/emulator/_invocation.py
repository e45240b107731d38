"""One invocation as the emulator tracks it, and the answer its caller gets."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from dataclasses import dataclass, field

from ._response_stream import MAX_STREAM_BYTES, ResponseStream
from ._wire import MAX_PAYLOAD_BYTES, RuntimeAPIError, function_error

__all__ = ["Answer", "Invocation", "new_trace_id"]


@dataclass(frozen=True)
class Answer:
    """What the invoke endpoint sends back to the caller.

    A streamed response answers the caller as soon as the runtime starts it:
    ``stream`` then carries the body, piece by piece, and ``body`` is empty.
    """

    body: bytes
    content_type: str = "application/json"
    function_error: str | None = None
    status: int = 200
    stream: ResponseStream | None = None
    # An API-level refusal (the function never ran): X-Amzn-ErrorType.
    api_error: str | None = None

    @classmethod
    def failure(cls, error_type: str, message: str) -> Answer:
        """A platform-built function error (timeout, crash, size limit)."""
        return cls(function_error(error_type, message), function_error="Unhandled")

    @classmethod
    def refusal(cls, status: int, error_type: str, message: str) -> Answer:
        """The invoke API refused the call; the function never saw it."""
        body = function_error(error_type, message)
        return cls(body, status=status, api_error=error_type)


def new_trace_id() -> str:
    """An X-Ray header like the one Lambda makes for an untraced request."""
    root = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=0"


def _future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


def _answer_future() -> asyncio.Future[Answer]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class Invocation:
    """An event on its way through the sandbox.

    Three moments matter and each is a future: ``handed_out`` (the runtime
    received the event from ``/next``), ``answer`` (the caller can be
    answered) and ``finished`` (the runtime polled ``/next`` again, so the
    environment is free for the next event). Create it inside a running loop.
    """

    event: bytes
    trace_id: str = field(default_factory=new_trace_id)
    client_context: str | None = None
    cognito_identity: str | None = None
    tenant_id: str | None = None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # The caller used InvokeWithResponseStream, so a streamed answer may be
    # as large as Lambda streams; a buffered caller gets the buffered limit.
    streaming: bool = False

    answer: asyncio.Future[Answer] = field(default_factory=_answer_future)
    handed_out: asyncio.Future[None] = field(default_factory=_future)
    finished: asyncio.Future[None] = field(default_factory=_future)

    # Loop-clock times; ``deadline_ms`` is the wall-clock figure the runtime sees.
    dispatched_at: float = 0.0
    handed_at: float = 0.0
    deadline: float = 0.0
    deadline_ms: int = 0

    @property
    def answered(self) -> bool:
        return self.answer.done()

    @property
    def stream_limit(self) -> int:
        return MAX_STREAM_BYTES if self.streaming else MAX_PAYLOAD_BYTES

    @property
    def stream(self) -> ResponseStream | None:
        """The streamed response the runtime started, if it did."""
        if not self.answer.done():
            return None
        return self.answer.result().stream

    @property
    def complete(self) -> bool:
        """Answered, and a streamed answer has ended too."""
        stream = self.stream
        return self.answered and (stream is None or stream.closed)

    def settle(self, answer: Answer) -> bool:
        """Answer the caller unless someone already did; True if this won."""
        if self.answer.done():
            return False
        self.answer.set_result(answer)
        return True

    def fail(
        self,
        error_type: str,
        message: str,
        refusal: RuntimeAPIError | None = None,
    ) -> bool:
        """Fail the caller with a platform error, or cut its stream short.

        ``refusal`` is what the runtime's streaming POST is answered, if it
        is still sending. True if this decided the caller's outcome.
        """
        if self.settle(Answer.failure(error_type, message)):
            return True
        stream = self.stream
        return stream is not None and stream.cut(error_type, message, refusal)

    def runtime_headers(self, function_arn: str) -> dict[str, str]:
        """The headers of the ``/next`` response that carries this event."""
        headers = {
            "Lambda-Runtime-Aws-Request-Id": self.request_id,
            "Lambda-Runtime-Deadline-Ms": str(self.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": function_arn,
            "Lambda-Runtime-Trace-Id": self.trace_id,
            "Content-Type": "application/json",
        }
        # Lambda sends the optional ones only when they carry something.
        optional = {
            "Lambda-Runtime-Client-Context": self.client_context,
            "Lambda-Runtime-Cognito-Identity": self.cognito_identity,
            "Lambda-Runtime-Aws-Tenant-Id": self.tenant_id,
        }
        headers.update({name: value for name, value in optional.items() if value})
        return headers
