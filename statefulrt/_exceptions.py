"""Exceptions raised by statefulrt.

The tree::

    StatefulRuntimeError            root: catch this to catch anything statefulrt raises
    ├── ConfigError                 a required setting is missing or malformed
    ├── HandlerError                the handler string or object cannot be used
    │   └── HandlerLoadError        resolving 'module.function' failed (carries the
    │                               Lambda error type: Runtime.ImportModuleError, ...)
    ├── RuntimeApiError             the Lambda Runtime API answered with an error status
    │   └── RuntimeApiUnavailable   the Runtime API could not be reached after retries
    ├── ResourceUnavailable         a resource could not be reopened after a freeze
    └── FlushError                  a flush hook failed; its data stays buffered

Errors raised by user code are never wrapped: they are reported to Lambda as
function errors and the loop goes on.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FlushError",
    "HandlerError",
    "HandlerLoadError",
    "ResourceUnavailable",
    "RuntimeApiError",
    "RuntimeApiUnavailable",
    "StatefulRuntimeError",
]


class StatefulRuntimeError(Exception):
    """Root of every error statefulrt raises itself."""


class ConfigError(StatefulRuntimeError):
    """A required setting is missing or has a value statefulrt cannot use."""


class HandlerError(StatefulRuntimeError):
    """The configured handler cannot be used."""


class HandlerLoadError(HandlerError):
    """Resolving the handler string failed.

    ``error_type`` is the Lambda error type reported to ``/runtime/init/error``.
    """

    def __init__(
        self, error_type: str, message: str, stack_trace: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.stack_trace = stack_trace or []


class RuntimeApiError(StatefulRuntimeError):
    """The Runtime API answered a request with an unexpected status."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        text = body[:512].decode("utf-8", "replace")
        super().__init__(f"{method} {path} answered {status}: {text}")
        self.method = method
        self.path = path
        self.status = status
        self.body = body


class RuntimeApiUnavailable(StatefulRuntimeError):
    """The Runtime API stayed unreachable through every retry."""


class ResourceUnavailable(StatefulRuntimeError):
    """A resource failed its check and could not be reopened.

    The invocation that needed it fails with ``Runtime.ResourceUnavailable``;
    the next one tries to reopen it again.
    """


class FlushError(StatefulRuntimeError):
    """A flush hook raised; the batch it held stays in the buffers for a retry."""
