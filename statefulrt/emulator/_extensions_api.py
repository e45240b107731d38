"""The Extensions API (``/2020-01-01/extension``) as routes.

Served on the Runtime API's socket, as on Lambda. Like the Runtime API routes
these only translate HTTP; the registry of the current environment decides. It
is looked up per request, because every reset brings a new environment with a
registry of its own, while a poll already waiting stays with the old one (and
is answered 500 when that environment goes away).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Final

from ._extensions import ExtensionRegistry
from ._server import Request, Response, Router
from ._wire import (
    MAX_ERROR_BYTES,
    RuntimeAPIError,
    error_response,
    read_limited,
    status_ok,
)

__all__ = ["EXTENSION_PREFIX", "add_extension_routes"]

EXTENSION_PREFIX: Final = "/2020-01-01/extension"

_NAME: Final = "Lambda-Extension-Name"
_FEATURES: Final = "Lambda-Extension-Accept-Feature"
_IDENTIFIER: Final = "Lambda-Extension-Identifier"
_EVENT_IDENTIFIER: Final = "Lambda-Extension-Event-Identifier"
_ERROR_TYPE: Final = "Lambda-Extension-Function-Error-Type"


class _ExtensionRoutes:
    def __init__(self, registry: Callable[[], ExtensionRegistry]) -> None:
        self._registry = registry

    async def register(self, request: Request) -> Response:
        body = await read_limited(request.body, MAX_ERROR_BYTES)
        try:
            if body is None:
                raise RuntimeAPIError.too_large(MAX_ERROR_BYTES)
            identifier, payload = self._registry().register(
                request.headers.get(_NAME, ""),
                body,
                request.headers.get(_FEATURES, ""),
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return Response(200, payload, headers={_IDENTIFIER: identifier})

    async def next(self, request: Request) -> Response:
        registry = self._registry()
        try:
            event = await registry.next(
                request.headers.get(_IDENTIFIER), request.transport
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return Response(200, event, headers={_EVENT_IDENTIFIER: str(uuid.uuid4())})

    async def init_error(self, request: Request) -> Response:
        # The optional ErrorRequest body only feeds Lambda's own logs.
        await read_limited(request.body, MAX_ERROR_BYTES)
        try:
            self._registry().init_error(
                request.headers.get(_IDENTIFIER), request.headers.get(_ERROR_TYPE)
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()

    async def exit_error(self, request: Request) -> Response:
        await read_limited(request.body, MAX_ERROR_BYTES)
        try:
            self._registry().exit_error(
                request.headers.get(_IDENTIFIER), request.headers.get(_ERROR_TYPE)
            )
        except RuntimeAPIError as exc:
            return error_response(exc)
        return status_ok()


def add_extension_routes(
    router: Router, registry: Callable[[], ExtensionRegistry]
) -> None:
    """Mount the Extensions API; ``registry`` returns the current environment's."""
    routes = _ExtensionRoutes(registry)
    router.add("POST", f"{EXTENSION_PREFIX}/register", routes.register)
    router.add("GET", f"{EXTENSION_PREFIX}/event/next", routes.next)
    router.add("POST", f"{EXTENSION_PREFIX}/init/error", routes.init_error)
    router.add("POST", f"{EXTENSION_PREFIX}/exit/error", routes.exit_error)
