"""The invoke endpoint, shaped like RIE's so existing tooling can call it.

``POST /2015-03-31/functions/function/invocations`` with the event as body.
The caller's ``X-Amz-Client-Context`` (base64 JSON), ``X-Amzn-Trace-Id`` and
``X-Amz-Tenant-Id`` become the runtime's ``Lambda-Runtime-*`` headers.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import orjson
from aiohttp import web

from ._config import VERSION
from ._invocation import Invocation, new_trace_id
from ._sandbox import Sandbox
from ._wire import MAX_PAYLOAD_BYTES, function_error, read_limited

__all__ = ["INVOKE_PATH", "add_invoke_routes", "encode_client_context"]

INVOKE_PATH: Final = "/2015-03-31/functions/function/invocations"


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


class _InvokeRoutes:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def invoke(self, request: web.Request) -> web.Response:
        # An oversized event is refused here: nothing reaches the runtime.
        event = await read_limited(request, MAX_PAYLOAD_BYTES)
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
        )

        answer = await self._sandbox.submit(invocation)
        response_headers = {
            "X-Amzn-RequestId": invocation.request_id,
            "X-Amz-Executed-Version": VERSION,
            "Content-Type": answer.content_type,
        }
        if answer.function_error is not None:
            response_headers["X-Amz-Function-Error"] = answer.function_error
        return web.Response(
            status=answer.status, body=answer.body, headers=response_headers
        )


def add_invoke_routes(
    app: web.Application, sandbox: Sandbox, function_name: str
) -> None:
    """Mount the invoke endpoint; the function's own name works as an alias."""
    routes = _InvokeRoutes(sandbox)
    app.router.add_post(INVOKE_PATH, routes.invoke)
    if function_name != "function":
        path = f"/2015-03-31/functions/{function_name}/invocations"
        app.router.add_post(path, routes.invoke)
