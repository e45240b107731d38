"""The Runtime API (``/2018-06-01``) as routes over the runtime's side.

The routes only translate HTTP to calls on the ``RuntimeSide`` and back; every
decision about states, ids and answers is the slot's (or, under Managed
Instances, the pool's). Bodies are read (with their limit) before anything is
decided, so a refused upload still ends cleanly. The one exception is a
streamed ``/response``: the caller is answered as soon as it begins, and its
body is passed on piece by piece until its end, where the trailers say whether
it failed (runtime-api.md A.6). The restore routes exist only under SnapStart,
as in RIE.
"""

from __future__ import annotations

from typing import Final

from ._logging import logger
from ._response_stream import ResponseStream, StreamError
from ._runtime_side import RuntimeSide
from ._server import IncompleteBody, Request, Response, Router
from ._wire import (
    MAX_ERROR_BYTES,
    MAX_PAYLOAD_BYTES,
    RuntimeAPIError,
    error_response,
    read_limited,
    status_ok,
)

__all__ = ["PREFIX", "add_runtime_routes"]

PREFIX: Final = "/2018-06-01"

_ERROR_TYPE: Final = "Lambda-Runtime-Function-Error-Type"
_RESPONSE_MODE: Final = "Lambda-Runtime-Function-Response-Mode"


class _RuntimeRoutes:
    def __init__(self, side: RuntimeSide, function_arn: str) -> None:
        self._side = side
        self._function_arn = function_arn

    async def next(self, request: Request) -> Response:
        try:
            invocation = await self._side.next(request.transport)
        except RuntimeAPIError as exc:
            return error_response(exc)
        headers = invocation.runtime_headers(self._function_arn)
        content_type = headers.pop("Content-Type")
        return Response(200, invocation.event, content_type, headers)

    async def response(self, request: Request) -> Response:
        if request.headers.get(_RESPONSE_MODE) == "streaming":
            return await self._stream(request)
        body = await read_limited(request.body, MAX_PAYLOAD_BYTES)
        try:
            self._side.response(
                request.match_info["request_id"],
                body,
                content_type=request.headers.get("Content-Type"),
                mode=request.headers.get(_RESPONSE_MODE),
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()

    async def _stream(self, request: Request) -> Response:
        request_id = request.match_info["request_id"]
        try:
            stream = self._side.open_stream(
                request_id, request.headers.get("Content-Type")
            )
        except RuntimeAPIError as exc:
            return error_response(exc)

        try:
            await _pump(request, stream)
        finally:
            # Cancelled (the runtime hung up) or broken: the caller learns it.
            message = (
                f"RequestId: {request_id} Error: the runtime's streamed response "
                "ended before its last chunk"
            )
            refusal = RuntimeAPIError.truncated()
            if stream.cut("Runtime.TruncatedResponse", message, refusal):
                logger.warning("request %s: streamed response truncated", request_id)
                request.body.abandon()
        if stream.refusal is not None:
            return error_response(stream.refusal)
        return status_ok()

    async def error(self, request: Request) -> Response:
        body = await read_limited(request.body, MAX_ERROR_BYTES)
        try:
            self._side.error(
                request.match_info["request_id"],
                body,
                error_type=request.headers.get(_ERROR_TYPE),
                limit=MAX_ERROR_BYTES,
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()

    async def init_error(self, request: Request) -> Response:
        body = await read_limited(request.body, MAX_ERROR_BYTES)
        try:
            self._side.init_error(
                body, error_type=request.headers.get(_ERROR_TYPE), limit=MAX_ERROR_BYTES
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()

    async def restore_next(self, request: Request) -> Response:
        try:
            await self._side.restore_next(request.transport)
        except RuntimeAPIError as exc:
            return error_response(exc)
        return Response(200, content_type=None)

    async def restore_error(self, request: Request) -> Response:
        body = await read_limited(request.body, MAX_ERROR_BYTES)
        try:
            self._side.restore_error(
                body, error_type=request.headers.get(_ERROR_TYPE), limit=MAX_ERROR_BYTES
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()

    async def ping(self, request: Request) -> Response:
        # Undocumented, kept by RAPID for old runtimes that probe it.
        return Response(200, b"pong", "text/plain; charset=utf-8")


async def _pump(request: Request, stream: ResponseStream) -> None:
    """Pass the body on as it arrives; at its end, the trailers' verdict.

    Once the platform has cut the stream (the size limit, a timeout) the rest
    is still read and dropped, so the runtime gets a clean refusal instead of
    a reset connection half way through its upload.
    """
    try:
        async for piece in request.body:
            await stream.feed(piece)
    except IncompleteBody as exc:
        logger.warning("a streamed response broke off: %s", exc)
        return
    stream.finish(StreamError.from_trailers(request.body.trailers))


def add_runtime_routes(
    router: Router, side: RuntimeSide, function_arn: str, *, snap_start: bool = False
) -> None:
    """Mount the Runtime API (and, under SnapStart, its restore routes)."""
    routes = _RuntimeRoutes(side, function_arn)
    invocation = f"{PREFIX}/runtime/invocation"
    router.add("GET", f"{invocation}/next", routes.next)
    router.add("POST", f"{invocation}/{{request_id}}/response", routes.response)
    router.add("POST", f"{invocation}/{{request_id}}/error", routes.error)
    router.add("POST", f"{PREFIX}/runtime/init/error", routes.init_error)
    if snap_start:
        router.add("GET", f"{PREFIX}/runtime/restore/next", routes.restore_next)
        router.add("POST", f"{PREFIX}/runtime/restore/error", routes.restore_error)
    router.add("GET", f"{PREFIX}/ping", routes.ping)
