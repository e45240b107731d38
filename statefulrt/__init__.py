"""statefulrt: an asyncio runtime for AWS Lambda that keeps state warm.

Write a handler as a plain ``handler(event, context)`` function (``def`` or
``async def``), or subclass ``StatefulHandler`` for init, flush and close hooks,
a flush policy and an in-memory ``state`` that lives between invocations.
"""

from __future__ import annotations

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
from ._version import __version__

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
