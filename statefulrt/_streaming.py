"""Response streaming: a handler's answer sent as it is produced.

A handler streams by returning an async iterator of ``bytes`` (or ``str``), a
``StreamingResponse`` around one, or a ``StreamingResponse`` around a
coroutine function that writes to a ``ResponseStream``.  The runtime posts it
with ``Lambda-Runtime-Function-Response-Mode: streaming`` and chunked
encoding.  A failure before the first byte is an ordinary invocation error; a
failure after it ends the body with the error trailers Lambda specifies (the
error document base64-encoded), because the status line has already gone out.
``HttpStreamingResponse`` adds the prelude that function URLs and API Gateway
read: a JSON object with the status code, headers and cookies, then eight NUL
bytes, then the body.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from . import _wire as wire
from ._diagnostic import ErrorPayload

STREAMING_MODE = "Lambda-Runtime-Function-Response-Mode"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"
HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response"
_PRELUDE_END = b"\x00" * 8

Writer = Callable[["ResponseStream"], Awaitable[None]]


class ResponseStream:
    """What a writer-style streaming handler writes its response to."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

    async def write(self, data: bytes | str) -> None:
        chunk = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if chunk:
            await self._queue.put(chunk)


class StreamingResponse:
    """A response body produced piece by piece."""

    def __init__(
        self,
        body: AsyncIterable[bytes | str] | Writer,
        *,
        content_type: str = "application/octet-stream",
    ) -> None:
        self.body = body
        self.content_type = content_type

    def prelude(self) -> bytes:
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        if callable(self.body):
            async for chunk in _from_writer(self.body):
                yield chunk
            return
        async for piece in self.body:
            chunk = piece.encode("utf-8") if isinstance(piece, str) else bytes(piece)
            if chunk:
                yield chunk


class HttpStreamingResponse(StreamingResponse):
    """A streamed response for a function URL or API Gateway integration."""

    def __init__(
        self,
        body: AsyncIterable[bytes | str] | Writer,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        cookies: list[str] | None = None,
    ) -> None:
        super().__init__(body, content_type=HTTP_INTEGRATION)
        self.status_code = status_code
        self.headers = dict(headers or {})
        self.cookies = list(cookies or [])

    def prelude(self) -> bytes:
        metadata: dict[str, Any] = {"statusCode": self.status_code}
        if self.headers:
            metadata["headers"] = self.headers
        if self.cookies:
            metadata["cookies"] = self.cookies
        return orjson.dumps(metadata) + _PRELUDE_END


def as_streaming(result: object) -> StreamingResponse | None:
    """The streaming response a handler returned, or None for a plain result."""
    if isinstance(result, StreamingResponse):
        return result
    if hasattr(result, "__aiter__"):
        return StreamingResponse(result)
    return None


async def _from_writer(writer: Writer) -> AsyncIterator[bytes]:
    stream = ResponseStream()

    async def produce() -> None:
        try:
            await writer(stream)
        finally:
            await stream._queue.put(None)

    task = asyncio.ensure_future(produce())
    try:
        while (chunk := await stream._queue.get()) is not None:
            yield chunk
        await task  # raises what the writer raised
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def request_head(host: str, port: int, request_id: str, content_type: str) -> bytes:
    lines = [
        f"POST /{wire.API_VERSION}/runtime/invocation/{request_id}/response HTTP/1.1",
        f"Host: {host}:{port}",
        f"{STREAMING_MODE}: streaming",
        f"Content-Type: {content_type}",
        "Transfer-Encoding: chunked",
        f"Trailer: {wire.ERROR_TYPE}, {ERROR_BODY}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def end_of_body(error: ErrorPayload | None) -> bytes:
    """The last chunk, with the error trailers when the stream failed."""
    if error is None:
        return b"0\r\n\r\n"
    encoded = base64.b64encode(error.to_json()).decode("ascii")
    trailers = f"{wire.ERROR_TYPE}: {error.error_type}\r\n{ERROR_BODY}: {encoded}\r\n"
    return b"0\r\n" + trailers.encode("latin-1") + b"\r\n"


async def post_stream(
    runtime_api: str,
    request_id: str,
    response: StreamingResponse,
    first: bytes,
    rest: AsyncIterator[bytes],
) -> tuple[int, ErrorPayload | None]:
    """Post a streamed response on its own connection.

    Returns the status Lambda answered and the error the stream ended with
    (None when it completed).
    """
    host, _, port = runtime_api.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    error: ErrorPayload | None = None
    try:
        writer.write(request_head(host, int(port), request_id, response.content_type))
        opening = response.prelude() + first
        if opening:
            writer.write(chunk(opening))
        await writer.drain()
        try:
            async for data in rest:
                writer.write(chunk(data))
                await writer.drain()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the user's generator: anything may come out
            error = ErrorPayload.from_exception(exc, request_id)
        writer.write(end_of_body(error))
        await writer.drain()

        status_line = await reader.readline()
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 else 0
        return status, error
    finally:
        writer.close()
