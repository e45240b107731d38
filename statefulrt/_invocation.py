"""One invocation as the Runtime API delivers it, and the context handlers see."""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from . import _wire as wire
from ._config import RuntimeConfig

if TYPE_CHECKING:
    from ._resources import Resources
    from ._state import State

# Lambda's longest timeout: the fallback deadline when the header is unusable.
MAX_TIMEOUT_MS = 900_000


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# which costs a microsecond on every invocation; nothing mutates it.
@dataclass(slots=True)
class Invocation:
    """The parsed response of ``GET /runtime/invocation/next``."""

    request_id: str
    deadline_ms: int
    invoked_function_arn: str
    body: bytes
    content_type: str | None = None
    trace_id: str | None = None
    client_context: str | None = None
    cognito_identity: str | None = None
    tenant_id: str | None = None
    # what was wrong with the headers, for a warning; the invocation still runs
    problems: tuple[str, ...] = ()

    @classmethod
    def from_next(
        cls, headers: Mapping[str, str], body: bytes, *, now_ms: int | None = None
    ) -> Invocation:
        """Parse the headers of a ``next`` response (names lower-cased).

        Raises ``ValueError`` only when the request id is missing, because
        without it the invocation cannot be answered at all.
        """
        request_id = headers.get(wire.REQUEST_ID, "")
        if not request_id:
            raise ValueError(f"event has no {wire.REQUEST_ID} header: cannot answer it")

        problems: list[str] = []
        raw_deadline = headers.get(wire.DEADLINE_MS)
        try:
            deadline_ms = int(raw_deadline) if raw_deadline is not None else -1
        except ValueError:
            deadline_ms = -1
        if deadline_ms <= 0:
            problems.append(
                f"{wire.DEADLINE_MS} is {raw_deadline!r}, not epoch milliseconds; "
                f"assuming {MAX_TIMEOUT_MS} ms remain"
            )
            now = int(time.time() * 1000) if now_ms is None else now_ms
            deadline_ms = now + MAX_TIMEOUT_MS

        return cls(
            request_id=request_id,
            deadline_ms=deadline_ms,
            invoked_function_arn=headers.get(wire.FUNCTION_ARN, ""),
            body=body,
            content_type=headers.get("content-type"),
            trace_id=headers.get(wire.TRACE_ID) or None,
            client_context=headers.get(wire.CLIENT_CONTEXT) or None,
            cognito_identity=headers.get(wire.COGNITO_IDENTITY) or None,
            tenant_id=headers.get(wire.TENANT_ID) or None,
            problems=tuple(problems),
        )


# The invocation being handled in this task; read by logging and by the
# runtime's helpers.  Several invocations may be in flight at once.
current_invocation: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "statefulrt_invocation", default=None
)


class CognitoIdentity:
    """``context.identity`` as awslambdaric builds it."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, identity_id: str | None, pool_id: str | None) -> None:
        self.cognito_identity_id = identity_id
        self.cognito_identity_pool_id = pool_id

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id}, "
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class Client:
    """``context.client_context.client`` (the mobile SDK's app description)."""

    __slots__ = (
        "installation_id",
        "app_title",
        "app_version_name",
        "app_version_code",
        "app_package_name",
    )

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.installation_id = fields.get("installation_id")
        self.app_title = fields.get("app_title")
        self.app_version_name = fields.get("app_version_name")
        self.app_version_code = fields.get("app_version_code")
        self.app_package_name = fields.get("app_package_name")


class ClientContext:
    """``context.client_context`` as awslambdaric builds it."""

    __slots__ = ("client", "custom", "env")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        client = fields.get("client")
        self.client = Client(client) if isinstance(client, Mapping) else None
        self.custom = fields.get("custom")
        self.env = fields.get("env")


class Context:
    """What a handler receives as ``context``.

    The attributes and methods of awslambdaric's context, so existing handlers
    run unchanged, plus ``is_cold``, ``invocation_index`` (1 for the first
    invocation this process handles) and ``deadline_ms``.
    """

    __slots__ = (
        "aws_request_id",
        "function_name",
        "function_version",
        "memory_limit_in_mb",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "identity",
        "client_context",
        "tenant_id",
        "trace_id",
        "deadline_ms",
        "is_cold",
        "invocation_index",
        "warnings",
        "resources",
        "state",
    )

    def __init__(
        self,
        invocation: Invocation,
        config: RuntimeConfig,
        *,
        index: int,
        resources: Resources | None = None,
        state: State | None = None,
    ) -> None:
        self.aws_request_id = invocation.request_id
        self.function_name = config.function_name
        self.function_version = config.function_version
        # a string, as awslambdaric passes the environment variable through
        self.memory_limit_in_mb = str(config.memory_size_mb)
        self.invoked_function_arn = invocation.invoked_function_arn
        self.log_group_name = config.log_group_name
        self.log_stream_name = config.log_stream_name
        self.tenant_id = invocation.tenant_id
        self.trace_id = invocation.trace_id
        self.deadline_ms = invocation.deadline_ms
        self.is_cold = index == 1
        self.invocation_index = index
        # the handler's resources and state, for code that only has the context
        self.resources = resources
        self.state = state

        warnings = list(invocation.problems)
        identity = _json_object(
            invocation.cognito_identity, wire.COGNITO_IDENTITY, warnings
        )
        self.identity = CognitoIdentity(
            _str_or_none(identity.get("cognitoIdentityId")),
            _str_or_none(identity.get("cognitoIdentityPoolId")),
        )
        client_context = _json_object(
            invocation.client_context, wire.CLIENT_CONTEXT, warnings
        )
        self.client_context = ClientContext(client_context) if client_context else None
        self.warnings = tuple(warnings)

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the deadline; never negative."""
        return max(self.deadline_ms - int(time.time() * 1000), 0)

    def log(self, message: str) -> None:
        """Write ``message`` to the function's log, as awslambdaric's does."""
        sys.stdout.write(message)
        sys.stdout.flush()

    def __repr__(self) -> str:
        return (
            f"Context(aws_request_id={self.aws_request_id!r}, "
            f"function_name={self.function_name!r}, "
            f"invocation_index={self.invocation_index})"
        )


def _json_object(raw: str | None, header: str, warnings: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        warnings.append(f"{header} is not JSON ({exc}); ignoring it")
        return {}
    if not isinstance(value, dict):
        warnings.append(f"{header} is not a JSON object; ignoring it")
        return {}
    return value


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
