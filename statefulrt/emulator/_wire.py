"""Wire-level pieces shared by the emulator's HTTP servers.

Two audiences get error bodies from the emulator and they look different:

- the *runtime* gets RAPID's ``ErrorResponse`` from the Runtime API, rendered the
  way Go's ``json.Encoder`` renders it (``errorMessage`` first, compact, a
  trailing newline);
- the *caller* of an invoke gets a function error payload
  (``{"errorType": ..., "errorMessage": ...}``), compact, no trailing newline.

Limits are the ones RIE enforces, which are a hundred bytes looser than the
documented 6 MB (runtime-api.md A.7).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable
from typing import Final

import orjson

from ._server import Response

__all__ = [
    "MAX_ERROR_BYTES",
    "MAX_PAYLOAD_BYTES",
    "RuntimeAPIError",
    "error_response",
    "error_payload",
    "function_error",
    "go_json",
    "platform_error_type",
    "read_limited",
    "status_ok",
]

MAX_PAYLOAD_BYTES: Final = 6 * 1024 * 1024 + 100
MAX_ERROR_BYTES: Final = 1024 * 1024

_PLATFORM_ERROR_TYPE: Final = re.compile(
    r"(Runtime|Function|Extension)\.[A-Z][a-zA-Z]+"
)


class RuntimeAPIError(Exception):
    """A Runtime API request the emulator refuses, as RAPID would refuse it."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message

    @classmethod
    def invalid_request_id(cls) -> RuntimeAPIError:
        return cls(400, "InvalidRequestID", "Invalid request ID")

    @classmethod
    def invalid_response_mode(cls) -> RuntimeAPIError:
        return cls(400, "InvalidFunctionResponseMode", "Invalid function response mode")

    @classmethod
    def truncated(cls) -> RuntimeAPIError:
        return cls(400, "TruncatedHTTPRequest", "HTTP request detected as truncated")

    @classmethod
    def invoke_timeout(cls) -> RuntimeAPIError:
        """A late answer under Managed Instances: the invocation timed out."""
        return cls(410, "InvokeTimeout", "Invoke timeout")

    @classmethod
    def too_large(cls, limit: int) -> RuntimeAPIError:
        message = f"Exceeded maximum allowed payload size ({limit} bytes)."
        return cls(413, "RequestEntityTooLarge", message)

    @classmethod
    def transition(cls, current: str, target: str) -> RuntimeAPIError:
        message = (
            f"State transition from {current} to {target} failed for runtime. "
            "Error: State transition is not allowed"
        )
        return cls(403, "InvalidStateTransition", message)

    @classmethod
    def internal(cls) -> RuntimeAPIError:
        return cls(500, "InternalServerError", "Internal Server Error")


def go_json(value: object) -> bytes:
    """``value`` as RAPID renders JSON: compact, with a trailing newline."""
    # Go's json.Encoder ends every document with a newline; runtimes compare
    # bodies byte for byte in their own tests, so the emulator does the same.
    return orjson.dumps(value) + b"\n"


def error_response(error: RuntimeAPIError) -> Response:
    """Render ``error`` as RAPID's ErrorResponse (runtime-api.md A.5)."""
    body = go_json({"errorMessage": error.message, "errorType": error.error_type})
    return Response(error.status, body)


def status_ok() -> Response:
    """The 202 ``StatusResponse`` every accepted runtime post gets."""
    return Response(202, go_json({"status": "OK"}))


def function_error(error_type: str, message: str) -> bytes:
    """A caller-facing error payload built by the platform, not the function."""
    return orjson.dumps({"errorType": error_type, "errorMessage": message})


def platform_error_type(value: str) -> str:
    """Normalise an error type for the REPORT line the way RAPID does."""
    if _PLATFORM_ERROR_TYPE.fullmatch(value):
        return value
    return "Function.Unknown" if value.startswith("Function.") else "Runtime.Unknown"


def error_payload(body: bytes, error_type: str | None) -> bytes:
    """The caller-facing body for an error the runtime posted.

    A JSON object goes through untouched, as Lambda passes it; anything else
    is wrapped, with the error-type header standing in for the missing type.
    """
    try:
        if isinstance(orjson.loads(body), dict):
            return body
    except orjson.JSONDecodeError:
        pass
    message = body.decode("utf-8", errors="replace").strip()
    return function_error(error_type or "Runtime.Unknown", message)


async def read_limited(body: AsyncIterable[bytes], limit: int) -> bytes | None:
    """Read a request body, or return ``None`` when it exceeds ``limit`` bytes.

    An oversized body is still read to the end and thrown away, so the client
    sees a clean status instead of a reset connection half way through its
    upload.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif parts:
            parts.clear()
    if size > limit:
        return None
    return b"".join(parts)
