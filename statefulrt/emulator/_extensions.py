"""The Extensions API's side of one execution environment (runtime-api.md A.10).

An ``ExtensionRegistry`` lives as long as the environment does: external
extensions are known by file name from their launch on, internal ones appear
when the runtime registers them. Each extension moves through RAPID's states,
whose names appear verbatim in the 403 bodies::

    Started --register--> Registered --event/next--> Ready --(event)--> Running
    Running --event/next--> Ready
    Registered --init/error--> InitError
    Registered/Ready/Running --exit/error--> ExitError

The registry decides what each request gets; the sandbox drives the phases
around it: it waits for every registration and first ``event/next`` before init
ends, sends INVOKE and waits for the subscribers to poll again before an
invocation ends, and sends SHUTDOWN when the environment goes away. Error
messages are RAPID's own (RIE ``rapi/handler``, ``core/*agent*``).

Under Managed Instances (``managed``) there is no INVOKE event at all: an
external extension may subscribe to SHUTDOWN only, an internal one to nothing
(RIE ``lambda-managed-instances/core/*agent.go``).
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ._invocation import Invocation
from ._poll import Poll
from ._wire import RuntimeAPIError, go_json

__all__ = [
    "MAX_EXTENSIONS",
    "Extension",
    "ExtensionFailure",
    "ExtensionRegistry",
    "ExtensionState",
    "FunctionMetadata",
]

INVOKE: Final = "INVOKE"
SHUTDOWN: Final = "SHUTDOWN"
MAX_EXTENSIONS: Final = 10

_NAME_INVALID: Final = "Extension.InvalidExtensionName"
_REGISTRATION_CLOSED: Final = "Extension.RegistrationClosed"
_UNKNOWN_ID: Final = "Extension.UnknownExtensionIdentifier"
_INVALID_STATE: Final = "Extension.InvalidExtensionState"
_MISSING_HEADER: Final = "Extension.MissingHeader"
_TOO_MANY: Final = "Extension.TooManyExtensions"
_INVALID_EVENT: Final = "Extension.InvalidEventType"
_INVALID_FORMAT: Final = "InvalidRequestFormat"
_MISSING_ID: Final = "Extension.MissingExtensionIdentifier"
_INVALID_ID: Final = "Extension.InvalidExtensionIdentifier"

_IDENTIFIER_HEADER: Final = "Lambda-Extension-Identifier"
_ERROR_TYPE_HEADER: Final = "Lambda-Extension-Function-Error-Type"


class ExtensionState(enum.Enum):
    """An extension's state, named as RAPID names it in its 403 messages."""

    STARTED = "Started"
    REGISTERED = "Registered"
    READY = "Ready"
    RUNNING = "Running"
    INIT_ERROR = "InitError"
    EXIT_ERROR = "ExitError"


@dataclass(frozen=True)
class FunctionMetadata:
    """What the register response tells an extension about the function."""

    function_name: str
    function_version: str
    handler: str
    account_id: str


@dataclass(frozen=True)
class ExtensionFailure:
    """The first fatal error an extension reported (init/error or exit/error)."""

    error_type: str
    name: str
    reported: str


@dataclass(eq=False)
class Extension:
    """One extension of the environment and the conversation it is in."""

    name: str
    external: bool
    identifier: str = field(default_factory=lambda: str(uuid.uuid4()))
    events: frozenset[str] = frozenset()
    state: ExtensionState = ExtensionState.STARTED
    poll: Poll[bytes] | None = None
    queued: deque[bytes] = field(default_factory=deque)

    @property
    def registered(self) -> bool:
        return self.state is not ExtensionState.STARTED

    @property
    def failed(self) -> bool:
        failed = (ExtensionState.INIT_ERROR, ExtensionState.EXIT_ERROR)
        return self.state in failed

    def deliver(self, event: bytes) -> None:
        """Hand ``event`` to the waiting poll, or keep it for the next one."""
        poll, self.poll = self.poll, None
        if poll is not None and poll.live:
            self.state = ExtensionState.RUNNING
            poll.deliver(event)
            return
        if poll is not None:
            poll.release()
        self.queued.append(event)


def _forbidden(error_type: str, message: str) -> RuntimeAPIError:
    return RuntimeAPIError(403, error_type, message)


def _transition(current: ExtensionState, target: str, who: str) -> RuntimeAPIError:
    message = (
        f"State transition from {current.value} to {target} failed for extension "
        f"{who}. Error: State transition is not allowed"
    )
    return _forbidden(_INVALID_STATE, message)


def _parse_events(body: bytes) -> list[str]:
    """The ``events`` of a register request, refused as RAPID refuses them."""
    if not body.strip():
        raise _forbidden(_INVALID_FORMAT, "unexpected end of JSON input")
    try:
        request: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # NOTE(go-json): RAPID quotes Go's decoder here ("invalid character
        # ..."); the emulator quotes orjson's, so only the type matches.
        raise _forbidden(_INVALID_FORMAT, str(exc)) from None
    if request is None:
        return []
    if not isinstance(request, dict):
        message = 'the register request must be a JSON object like {"events": []}'
        raise _forbidden(_INVALID_FORMAT, message)
    if request.get("configurationKeys"):
        message = "configurationKeys are deprecated; use environment variables instead"
        raise _forbidden(_INVALID_FORMAT, message)
    events = request.get("events")
    if events is None:
        return []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        message = 'events must be a list of event names such as "INVOKE"'
        raise _forbidden(_INVALID_FORMAT, message)
    return events


class ExtensionRegistry:
    """Every extension of one environment, and the phases they hold up."""

    def __init__(
        self,
        metadata: FunctionMetadata,
        external_names: Iterable[str] = (),
        *,
        managed: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._metadata = metadata
        self._managed = managed
        self._by_name = {
            name: Extension(name, external=True) for name in external_names
        }
        self._by_id: dict[str, Extension] = {}
        self.registration_open = True

        # Resolved once every launched external extension has registered.
        self.externals_registered: asyncio.Future[None] = loop.create_future()
        # Resolved with the first init/error or exit/error.
        self.failed: asyncio.Future[ExtensionFailure] = loop.create_future()
        self._ready: asyncio.Future[None] | None = None
        self._invoke: asyncio.Future[None] | None = None
        self._invoke_pending: set[Extension] = set()
        self._check_externals()

    @classmethod
    def closed(cls, metadata: FunctionMetadata) -> ExtensionRegistry:
        """The registry between two environments: it refuses everything."""
        registry = cls(metadata)
        registry.registration_open = False
        return registry

    # -- what the sandbox looks at ------------------------------------------

    @property
    def registered(self) -> list[Extension]:
        return list(self._by_id.values())

    @property
    def has_external(self) -> bool:
        return any(extension.external for extension in self._by_id.values())

    @property
    def has_internal(self) -> bool:
        return any(not extension.external for extension in self._by_id.values())

    # -- driven by the sandbox ------------------------------------------------

    def close_registration(self) -> None:
        """Init is over as far as registering goes (the runtime polled)."""
        self.registration_open = False

    def wait_ready(self) -> asyncio.Future[None]:
        """A future resolved once every registered extension has polled once."""
        self._ready = asyncio.get_running_loop().create_future()
        self._check_ready()
        return self._ready

    def dispatch_invoke(
        self, invocation: Invocation, function_arn: str
    ) -> asyncio.Future[None]:
        """Send INVOKE to its subscribers; resolved when all have polled again."""
        event: dict[str, object] = {
            "eventType": INVOKE,
            "deadlineMs": invocation.deadline_ms,
            "requestId": invocation.request_id,
            "invokedFunctionArn": function_arn,
        }
        if invocation.trace_id:
            event["tracing"] = {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id}
        body = go_json(event)

        self._invoke = asyncio.get_running_loop().create_future()
        self._invoke_pending = {
            extension
            for extension in self._by_id.values()
            if INVOKE in extension.events and not extension.failed
        }
        for extension in self._invoke_pending:
            extension.deliver(body)
        self._check_invoke()
        return self._invoke

    def dispatch_shutdown(self, reason: str, deadline_ms: int) -> list[str]:
        """Send SHUTDOWN to the external subscribers; returns their names."""
        self.registration_open = False
        body = go_json(
            {"eventType": SHUTDOWN, "deadlineMs": deadline_ms, "shutdownReason": reason}
        )
        names = []
        for extension in self._by_id.values():
            if SHUTDOWN in extension.events and not extension.failed:
                extension.deliver(body)
                names.append(extension.name)
        return names

    def release_all(self) -> None:
        """Answer every waiting poll with a 500: the environment is gone."""
        self.registration_open = False
        for extension in self._by_id.values():
            poll, extension.poll = extension.poll, None
            if poll is not None:
                poll.release()

    # -- driven by extensions ---------------------------------------------------

    def register(self, name: str, body: bytes, features: str) -> tuple[str, bytes]:
        """``POST /extension/register``: the new identifier and the response body."""
        if not name:
            raise _forbidden(_NAME_INVALID, "Empty extension name")
        events = _parse_events(body)

        extension = self._by_name.get(name)
        if extension is not None and extension.external:
            allowed = (SHUTDOWN,) if self._managed else (INVOKE, SHUTDOWN)
            for event in events:
                if event not in allowed:
                    raise _forbidden(_INVALID_EVENT, f"{event}: ErrorInvalidEventType")
            if extension.state is not ExtensionState.STARTED:
                raise _transition(extension.state, "Registered", name)
        else:
            extension = self._register_internal(name, events)

        extension.events = frozenset(events)
        extension.state = ExtensionState.REGISTERED
        self._by_id[extension.identifier] = extension
        self._check_externals()

        response: dict[str, str] = {}
        accepted = {feature.strip() for feature in features.split(",")}
        if "accountId" in accepted:
            response["accountId"] = self._metadata.account_id
        response["functionName"] = self._metadata.function_name
        response["functionVersion"] = self._metadata.function_version
        response["handler"] = self._metadata.handler
        return extension.identifier, go_json(response)

    def _register_internal(self, name: str, events: list[str]) -> Extension:
        # Internal extensions live inside the runtime process, which is gone
        # by the time SHUTDOWN would be sent, so Lambda refuses it outright.
        for event in events:
            if event == SHUTDOWN:
                message = f"{event}: ShutdownEventNotSupportedForInternalExtension"
                raise _forbidden(_INVALID_EVENT, message)
            if event != INVOKE or self._managed:
                raise _forbidden(_INVALID_EVENT, f"{event}: ErrorInvalidEventType")
        if not self.registration_open:
            raise _forbidden(
                _REGISTRATION_CLOSED, "Extension registration closed already"
            )
        if len(self._by_name) >= MAX_EXTENSIONS:
            message = f"Extension limit ({MAX_EXTENSIONS}) reached"
            raise _forbidden(_TOO_MANY, message)
        if name in self._by_name:
            message = "Extension with this name already registered"
            raise _forbidden(_INVALID_STATE, message)
        extension = Extension(name, external=False)
        self._by_name[name] = extension
        return extension

    async def next(
        self, identifier: str | None, transport: asyncio.BaseTransport | None
    ) -> bytes:
        """``GET /extension/event/next``: block until there is an event."""
        key = _identifier(identifier)
        extension = self._by_id.get(key)
        if extension is None:
            raise _forbidden(_UNKNOWN_ID, f"Unknown extension {key}")

        if extension.state is ExtensionState.READY:
            # Already waiting: a second poll is refused unless the first one's
            # client has gone away.
            poll = extension.poll
            if poll is not None and poll.live:
                raise _transition(extension.state, "Ready", key)
            if poll is not None:
                poll.release()
        elif extension.state in (ExtensionState.REGISTERED, ExtensionState.RUNNING):
            extension.state = ExtensionState.READY
            self._invoke_pending.discard(extension)
            self._check_ready()
            self._check_invoke()
        else:
            raise _transition(extension.state, "Ready", key)

        if extension.queued:
            extension.state = ExtensionState.RUNNING
            return extension.queued.popleft()
        poll = extension.poll = Poll.open(transport)
        try:
            event = await poll.future
        finally:
            if extension.poll is poll:
                extension.poll = None
        if event is None:
            raise RuntimeAPIError.internal()
        return event

    def init_error(self, identifier: str | None, error_type: str | None) -> None:
        """``POST /extension/init/error``: the extension failed its init."""
        extension, key = self._reporter(identifier, error_type)
        if extension.state is ExtensionState.INIT_ERROR:
            return  # only the first report counts, later ones are accepted
        if extension.state is not ExtensionState.REGISTERED:
            raise _transition(extension.state, "InitError", key)
        extension.state = ExtensionState.INIT_ERROR
        self._fail("Extension.InitError", extension, str(error_type))

    def exit_error(self, identifier: str | None, error_type: str | None) -> None:
        """``POST /extension/exit/error``: the extension is about to exit."""
        extension, key = self._reporter(identifier, error_type)
        if extension.state is ExtensionState.EXIT_ERROR:
            return
        allowed = (
            ExtensionState.REGISTERED,
            ExtensionState.READY,
            ExtensionState.RUNNING,
        )
        if extension.state not in allowed:
            raise _transition(extension.state, "Exited", key)
        extension.state = ExtensionState.EXIT_ERROR
        self._invoke_pending.discard(extension)
        self._fail("Extension.ExitError", extension, str(error_type))

    def _reporter(
        self, identifier: str | None, error_type: str | None
    ) -> tuple[Extension, str]:
        # RAPID checks the identifier, then the error type, then looks it up.
        key = _identifier(identifier)
        if not error_type:
            raise _forbidden(_MISSING_HEADER, f"{_ERROR_TYPE_HEADER} not found")
        extension = self._by_id.get(key)
        if extension is None:
            raise _forbidden(_UNKNOWN_ID, f"Unknown {_IDENTIFIER_HEADER}")
        return extension, key

    # -- phase bookkeeping --------------------------------------------------------

    def _fail(self, error_type: str, extension: Extension, reported: str) -> None:
        if not self.failed.done():
            failure = ExtensionFailure(error_type, extension.name, reported)
            self.failed.set_result(failure)

    def _check_externals(self) -> None:
        externals = [e for e in self._by_name.values() if e.external]
        done = self.externals_registered.done()
        if not done and all(extension.registered for extension in externals):
            self.externals_registered.set_result(None)

    def _check_ready(self) -> None:
        waiting = ExtensionState.REGISTERED
        ready = all(e.state is not waiting for e in self._by_id.values())
        if self._ready is not None and not self._ready.done() and ready:
            self._ready.set_result(None)

    def _check_invoke(self) -> None:
        invoke = self._invoke
        if invoke is not None and not invoke.done() and not self._invoke_pending:
            invoke.set_result(None)


def _identifier(value: str | None) -> str:
    """The canonical form of a ``Lambda-Extension-Identifier`` header."""
    if not value:
        message = f"Missing {_IDENTIFIER_HEADER} header"
        raise _forbidden(_MISSING_ID, message)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _forbidden(_INVALID_ID, f"Invalid {_IDENTIFIER_HEADER}") from None
