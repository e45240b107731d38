"""The invoke endpoints, shaped like Lambda's so existing tooling can call them.

``POST /2015-03-31/functions/function/invocations`` (RIE's, the ``Invoke``
API) answers with the whole response. A streamed response is gathered first,
within the buffered limit; one that failed after it began answers with the
error its trailers carried, as a function error.

``POST /2021-11-15/functions/function/response-streaming-invocations`` (the
``InvokeWithResponseStream`` API, which RIE lacks) answers as Lambda does: the
function's content type in ``Content-Type`` (an HTTP-integration prelude is
left in the payload untouched), and a chunked body of AWS event-stream
messages, a ``PayloadChunk`` written as each piece arrives from the runtime,
then an ``InvokeComplete`` whose ``ErrorCode`` (the error type) and
``ErrorDetails`` (the error document) report a failure after the stream
began; this final event is where a mid-stream error goes, since HTTP trailers
cannot reach most clients. An error before any byte is the same
``InvokeComplete``, with ``X-Amz-Function-Error`` set as well.

For both, the caller's ``X-Amz-Client-Context`` (base64 JSON),
``X-Amzn-Trace-Id`` and ``X-Amz-Tenant-Id`` become the runtime's
``Lambda-Runtime-*`` headers.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import orjson
from aiohttp import web

from ._config import VERSION
from ._eventstream import invoke_complete, payload_chunk
from ._invocation import Answer, Invocation, new_trace_id
from ._response_stream import ResponseStream
from ._sandbox import Sandbox
from ._wire import MAX_PAYLOAD_BYTES, function_error, read_limited

__all__ = [
    "INVOKE_PATH",
    "STREAM_PATH",
    "add_invoke_routes",
    "encode_client_context",
]

INVOKE_PATH: Final = "/2015-03-31/functions/function/invocations"
STREAM_PATH: Final = "/2021-11-15/functions/function/response-streaming-invocations"

_CHUNK: Final = 64 * 1024


class _BadRequest(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def encode_client_context(context: object) -> str:
    """The ``X-Amz-Client-Context`` value for ``context``, as SDKs send it."""
    return base64.b64encode(orjson.dumps(context)).decode("ascii")


def _decode_client_context(value: str | None) -> str | None:
    if not value:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
        if isinstance(orjson.loads(text), dict):
            return text
    except (binascii.Error, UnicodeDecodeError, orjson.JSONDecodeError):
        pass
    raise _BadRequest(
        "InvalidRequestContentException",
        "X-Amz-Client-Context must be a base64-encoded JSON object",
    )


def _client_error(status: int, error_type: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=function_error(error_type, message),
        content_type="application/json",
        headers={"X-Amzn-ErrorType": error_type},
    )


def _error_code(payload: bytes) -> str:
    """The error type an error document names, for ``ErrorCode``."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "Unhandled"
    error_type = document.get("errorType") if isinstance(document, dict) else None
    return str(error_type or "Unhandled")


class _InvokeRoutes:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def _submit(
        self, request: web.Request, *, streaming: bool
    ) -> tuple[Invocation, Answer] | web.Response:
        # An oversized event is refused here: nothing reaches the runtime.
        event = await read_limited(
            request.content.iter_chunked(_CHUNK), MAX_PAYLOAD_BYTES
        )
        if event is None:
            message = (
                f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes "
                "for the InvokeFunction operation"
            )
            return _client_error(413, "RequestTooLargeException", message)

        headers = request.headers
        try:
            client_context = _decode_client_context(headers.get("X-Amz-Client-Context"))
        except _BadRequest as exc:
            return _client_error(400, exc.error_type, exc.message)
        invocation = Invocation(
            event,
            trace_id=headers.get("X-Amzn-Trace-Id") or new_trace_id(),
            client_context=client_context,
            tenant_id=headers.get("X-Amz-Tenant-Id") or None,
            streaming=streaming,
        )
        return invocation, await self._sandbox.submit(invocation)

    async def invoke(self, request: web.Request) -> web.Response:
        submitted = await self._submit(request, streaming=False)
        if isinstance(submitted, web.Response):
            return submitted
        invocation, answer = submitted
        if answer.stream is not None:
            answer = await _gather(answer.stream)

        response_headers = _headers(invocation, answer)
        return web.Response(
            status=answer.status, body=answer.body, headers=response_headers
        )

    async def invoke_stream(self, request: web.Request) -> web.StreamResponse:
        submitted = await self._submit(request, streaming=True)
        if isinstance(submitted, web.Response):
            return submitted
        invocation, answer = submitted
        if answer.api_error is not None:
            # Refused before the function ran: an API error, not a stream.
            return web.Response(
                status=answer.status,
                body=answer.body,
                headers=_headers(invocation, answer),
            )

        response = web.StreamResponse(headers=_headers(invocation, answer))
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = answer.stream
        if stream is None and answer.function_error is not None:
            ending = invoke_complete(_error_code(answer.body), answer.body.decode())
        elif stream is None:
            await response.write(payload_chunk(answer.body))
            ending = invoke_complete()
        else:
            try:
                async for piece in stream:
                    await response.write(payload_chunk(piece))
            finally:
                # A caller that hung up must not hold the runtime's POST back.
                stream.abandon()
            error = stream.error
            ending = invoke_complete()
            if error is not None:
                ending = invoke_complete(error.error_type, error.payload.decode())
        await response.write(ending)
        await response.write_eof()
        return response


async def _gather(stream: ResponseStream) -> Answer:
    """A streamed response, whole, for a caller of the buffered API."""
    try:
        body = b"".join([piece async for piece in stream])
    finally:
        stream.abandon()
    error = stream.error
    if error is not None:
        return Answer(error.payload, function_error="Unhandled")
    return Answer(body, stream.content_type)


def _headers(invocation: Invocation, answer: Answer) -> dict[str, str]:
    headers = {
        "X-Amzn-RequestId": invocation.request_id,
        "X-Amz-Executed-Version": VERSION,
        "Content-Type": answer.content_type,
    }
    if answer.function_error is not None:
        headers["X-Amz-Function-Error"] = answer.function_error
    if answer.api_error is not None:
        headers["X-Amzn-ErrorType"] = answer.api_error
    return headers


def add_invoke_routes(
    app: web.Application, sandbox: Sandbox, function_name: str
) -> None:
    """Mount the invoke endpoints; the function's own name works as an alias."""
    routes = _InvokeRoutes(sandbox)
    app.router.add_post(INVOKE_PATH, routes.invoke)
    app.router.add_post(STREAM_PATH, routes.invoke_stream)
    if function_name != "function":
        base = f"/functions/{function_name}"
        app.router.add_post(f"/2015-03-31{base}/invocations", routes.invoke)
        stream_path = f"/2021-11-15{base}/response-streaming-invocations"
        app.router.add_post(stream_path, routes.invoke_stream)
