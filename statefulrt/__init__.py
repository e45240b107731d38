"""statefulrt: an asyncio runtime for AWS Lambda that keeps state warm.

Write a handler as a plain ``handler(event, context)`` function (``def`` or
``async def``), or subclass ``StatefulHandler`` for init, flush and close hooks,
a flush policy and an in-memory ``state`` that lives between invocations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

# Names are imported on first use: ``python -m statefulrt`` runs this module
# on every cold start, and the bootstrap needs only a few of them.
_EXPORTS = {
    "Buffer": "_state",
    "ConfigError": "_exceptions",
    "Context": "_invocation",
    "Counter": "_state",
    "ErrorPayload": "_diagnostic",
    "Flush": "_flush",
    "FlushError": "_exceptions",
    "FlushPolicy": "_flush",
    "HandlerError": "_exceptions",
    "HandlerLoadError": "_exceptions",
    "HttpStreamingResponse": "_streaming",
    "InvocationKind": "_metrics",
    "LifecycleMetrics": "_metrics",
    "Resource": "_resources",
    "ResourceUnavailable": "_exceptions",
    "Resources": "_resources",
    "ResponseStream": "_streaming",
    "RuntimeApiError": "_exceptions",
    "RuntimeApiUnavailable": "_exceptions",
    "RuntimeConfig": "_config",
    "State": "_state",
    "StatefulHandler": "_handler",
    "StatefulRuntimeError": "_exceptions",
    "StreamingResponse": "_streaming",
    "flush_hook": "_handler",
}

__all__ = [
    "Buffer",
    "ConfigError",
    "Context",
    "Counter",
    "ErrorPayload",
    "Flush",
    "FlushError",
    "FlushPolicy",
    "HandlerError",
    "HandlerLoadError",
    "HttpStreamingResponse",
    "InvocationKind",
    "LifecycleMetrics",
    "Resource",
    "ResourceUnavailable",
    "Resources",
    "ResponseStream",
    "RuntimeApiError",
    "RuntimeApiUnavailable",
    "RuntimeConfig",
    "State",
    "StatefulHandler",
    "StatefulRuntimeError",
    "StreamingResponse",
    "__version__",
    "flush_hook",
]

if TYPE_CHECKING:
    from ._config import RuntimeConfig
    from ._diagnostic import ErrorPayload
    from ._exceptions import (
        ConfigError,
        FlushError,
        HandlerError,
        HandlerLoadError,
        ResourceUnavailable,
        RuntimeApiError,
        RuntimeApiUnavailable,
        StatefulRuntimeError,
    )
    from ._flush import Flush, FlushPolicy
    from ._handler import StatefulHandler, flush_hook
    from ._invocation import Context
    from ._metrics import InvocationKind, LifecycleMetrics
    from ._resources import Resource, Resources
    from ._state import Buffer, Counter, State
    from ._streaming import HttpStreamingResponse, ResponseStream, StreamingResponse


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'statefulrt' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"statefulrt.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
