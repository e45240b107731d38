"""The Runtime API (``/2018-06-01``) as aiohttp routes over the sandbox.

The routes only translate HTTP to slot calls and back; every decision about
states, ids and answers is the slot's. Bodies are read (with their limit)
before anything is decided, so a refused upload still ends cleanly.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ._slot import RuntimeSlot
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
    def __init__(self, slot: RuntimeSlot, function_arn: str) -> None:
        self._slot = slot
        self._function_arn = function_arn

    async def next(self, request: web.Request) -> web.Response:
        try:
            invocation = await self._slot.next(request.transport)
        except RuntimeAPIError as exc:
            return error_response(exc)
        headers = invocation.runtime_headers(self._function_arn)
        return web.Response(body=invocation.event, headers=headers)

    async def response(self, request: web.Request) -> web.Response:
        body = await read_limited(request, MAX_PAYLOAD_BYTES)
        try:
            self._slot.response(
                request.match_info["request_id"],
                body,
                content_type=request.headers.get("Content-Type"),
                mode=request.headers.get(_RESPONSE_MODE),
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()

    async def error(self, request: web.Request) -> web.Response:
        body = await read_limited(request, MAX_ERROR_BYTES)
        try:
            self._slot.error(
                request.match_info["request_id"],
                body,
                error_type=request.headers.get(_ERROR_TYPE),
                limit=MAX_ERROR_BYTES,
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()

    async def init_error(self, request: web.Request) -> web.Response:
        body = await read_limited(request, MAX_ERROR_BYTES)
        try:
            self._slot.init_error(
                body, error_type=request.headers.get(_ERROR_TYPE), limit=MAX_ERROR_BYTES
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()

    async def ping(self, request: web.Request) -> web.Response:
        # Undocumented, kept by RAPID for old runtimes that probe it.
        return web.Response(text="pong")


def add_runtime_routes(
    app: web.Application, slot: RuntimeSlot, function_arn: str
) -> None:
    """Mount the Runtime API on ``app`` (which may later host other APIs)."""
    routes = _RuntimeRoutes(slot, function_arn)
    invocation = f"{PREFIX}/runtime/invocation"
    app.router.add_get(f"{invocation}/next", routes.next)
    app.router.add_post(f"{invocation}/{{request_id}}/response", routes.response)
    app.router.add_post(f"{invocation}/{{request_id}}/error", routes.error)
    app.router.add_post(f"{PREFIX}/runtime/init/error", routes.init_error)
    app.router.add_get(f"{PREFIX}/ping", routes.ping)
