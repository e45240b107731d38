"""A streamed response on its way from the runtime's POST to the caller.

The Runtime API route feeds it piece by piece as the runtime's chunked body
arrives; the invoke route reads it as it fills, so the caller sees each piece
without waiting for the rest. Both sides can end it: the runtime by finishing
its body (with error trailers after a mid-stream failure), the platform by
cutting it (a timeout, a crash, the size limit, a body cut short). The first
end wins. Memory stays bounded: past a high-water mark the runtime's side
waits for the caller to catch up, and a caller that hangs up stops the
buffering altogether.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Final

from ._wire import RuntimeAPIError, error_payload, function_error, platform_error_type

__all__ = ["MAX_STREAM_BYTES", "ResponseStream", "StreamError"]

# Lambda's documented limit for a streamed response (runtime-api.md A.6).
MAX_STREAM_BYTES: Final = 200 * 1024 * 1024

_HIGH_WATER: Final = 1024 * 1024
_LOW_WATER: Final = 256 * 1024

_ERROR_TYPE: Final = "Lambda-Runtime-Function-Error-Type"
_ERROR_BODY: Final = "Lambda-Runtime-Function-Error-Body"


@dataclass(frozen=True)
class StreamError:
    """How a stream failed: the error type and the error document (JSON)."""

    error_type: str
    payload: bytes

    @classmethod
    def from_trailers(cls, trailers: Mapping[str, str]) -> StreamError | None:
        """The runtime's mid-stream error, if its trailers carry one.

        The type is normalised as RAPID normalises it; the body trailer is the
        base64 of the error document, and a body that does not decode leaves
        the type alone to describe the failure.
        """
        reported = trailers.get(_ERROR_TYPE)
        if not reported:
            return None
        try:
            body = base64.b64decode(trailers.get(_ERROR_BODY, ""), validate=True)
        except binascii.Error:
            body = b""
        return cls(platform_error_type(reported), error_payload(body, reported))


class ResponseStream:
    """The pieces of one streamed response, between the runtime and the caller."""

    def __init__(self, content_type: str, limit: int) -> None:
        self.content_type = content_type
        self.limit = limit
        self.size = 0
        self.error: StreamError | None = None
        # What the runtime's POST is answered when the platform cut it.
        self.refusal: RuntimeAPIError | None = None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._abandoned = False

    @property
    def closed(self) -> bool:
        return self.ended.done()

    # -- the runtime's side --------------------------------------------------

    async def feed(self, piece: bytes) -> bool:
        """Pass ``piece`` on; False (and ``piece`` dropped) once the stream is over."""
        if self.closed:
            return False
        self.size += len(piece)
        if self.size > self.limit:
            message = (
                "Response payload size exceeded maximum allowed payload size "
                f"({self.limit} bytes)."
            )
            refusal = RuntimeAPIError.too_large(self.limit)
            self.cut("Function.ResponseSizeTooLarge", message, refusal)
            return False
        if self._abandoned:
            return True
        self._pieces.append(piece)
        self._buffered += len(piece)
        self._readable.set()
        if self._buffered >= _HIGH_WATER:
            self._writable.clear()
            await self._writable.wait()
        return not self.closed

    def finish(self, error: StreamError | None = None) -> None:
        """The runtime ended its body, with the error its trailers carried."""
        self._close(error)

    def cut(
        self,
        error_type: str,
        message: str,
        refusal: RuntimeAPIError | None = None,
    ) -> bool:
        """End the stream on the platform's side; True if this ended it."""
        if self.closed:
            return False
        self.refusal = refusal
        self._close(StreamError(error_type, function_error(error_type, message)))
        return True

    def _close(self, error: StreamError | None) -> None:
        if self.closed:
            return
        self.error = error
        self.ended.set_result(None)
        self._readable.set()
        self._writable.set()

    # -- the caller's side ---------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self._pieces:
                piece = self._pieces.popleft()
                self._buffered -= len(piece)
                if self._buffered <= _LOW_WATER:
                    self._writable.set()
                yield piece
                continue
            if self.closed:
                return
            self._readable.clear()
            await self._readable.wait()

    def abandon(self) -> None:
        """The caller hung up: drop what is buffered and whatever comes next."""
        self._abandoned = True
        self._pieces.clear()
        self._buffered = 0
        self._writable.set()
