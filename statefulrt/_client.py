"""Coroutines for the Runtime API endpoints, over a swappable transport.

The default transport is statefulrt's own HTTP/1.1 connection
(``_http.HttpConnection``); ``STATEFULRT_TRANSPORT`` picks another for
comparison (``benchmarks/`` measures them side by side):

``protocol``  the default, parsing in an ``asyncio.Protocol``; pipelines a
              response with the next ``next`` when the runtime asks
``serial``    the same, one request at a time (never pipelines)
``streams``   the same client over asyncio streams, one request at a time
``aiohttp``   an aiohttp session (about 200 ms more to import)
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Protocol

from . import _wire as wire
from ._diagnostic import ErrorPayload
from ._exceptions import ConfigError, RuntimeApiError, RuntimeApiUnavailable
from ._http import (
    ConnectionLost,
    HttpConnection,
    HttpResponse,
    Request,
    StreamConnection,
)
from ._invocation import Invocation
from ._log import transport_logger
from ._version import __version__

if TYPE_CHECKING:
    import aiohttp

# sys.version_info, not platform.python_version(): platform costs an import
_PYTHON = ".".join(str(part) for part in sys.version_info[:3])
USER_AGENT = f"statefulrt/{__version__} python/{_PYTHON}"

_BASE = f"/{wire.API_VERSION}/runtime"
_NEXT = f"{_BASE}/invocation/next"
_NEXT_REQUEST = Request("GET", _NEXT)
_JSON = "application/json"

TRANSPORT_ENV = "STATEFULRT_TRANSPORT"
TRANSPORTS = ("protocol", "serial", "streams", "aiohttp")


class Transport(Protocol):
    """Sends one HTTP request to the Runtime API and returns its response."""

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """An aiohttp session: slower to import, kept for comparison and for tests
    that mock the Runtime API with aioresponses."""

    def __init__(self, host: str, port: int) -> None:
        self._base = f"http://{host}:{port}"
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        import aiohttp  # deferred: importing aiohttp costs about 200 ms

        if self._session is None:
            # no read timeout: `next` long-polls and the sandbox may freeze
            timeout = aiohttp.ClientTimeout(total=None, connect=1.0)
            self._session = aiohttp.ClientSession(
                timeout=timeout, headers={"User-Agent": USER_AGENT}
            )
        try:
            async with self._session.request(
                method, self._base + path, data=body or None, headers=headers
            ) as response:
                payload = await response.read()
                names = {key.lower(): value for key, value in response.headers.items()}
                return HttpResponse(response.status, names, payload)
        except aiohttp.ClientError as exc:
            raise ConnectionLost(f"{method} {path}: {exc!r}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def transport_named(name: str, runtime_api: str) -> Transport:
    """The transport ``name`` (one of ``TRANSPORTS``) to ``runtime_api``."""
    host, _, port = runtime_api.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"runtime_api must be 'host:port', not {runtime_api!r}")
    if name == "protocol":
        return HttpConnection(host, int(port), user_agent=USER_AGENT)
    if name == "serial":
        return HttpConnection(host, int(port), user_agent=USER_AGENT, pipelining=False)
    if name == "streams":
        return StreamConnection(host, int(port), user_agent=USER_AGENT)
    if name == "aiohttp":
        return AiohttpTransport(host, int(port))
    raise ConfigError(
        f"{TRANSPORT_ENV} must be one of {', '.join(TRANSPORTS)}, not {name!r}"
    )


class RuntimeApiClient:
    """One coroutine per Runtime API endpoint.

    A transport failure (reset, refused, closed mid-response) is retried with
    exponential backoff; after ``attempts`` failures in a row the client raises
    ``RuntimeApiUnavailable`` and the runtime exits.  4xx answers to posts are
    logged and reported as ``False`` (the invocation was already answered, or
    has timed out); 5xx answers raise ``RuntimeApiError``, because Lambda asks
    a runtime to exit on them.

    ``post_response(..., then_next=True)`` writes the response and the next
    ``next`` in one write (HTTP/1.1 pipelining) and returns once the response
    is accepted; the following ``next_invocation`` then only waits for the
    event.  This saves a write and a wake-up per invocation, and on a
    separate CPU a round trip; the runtime asks for it only when it has no
    post-response work to do, because the sandbox may be frozen as soon as
    Lambda has the ``next``.
    """

    def __init__(
        self,
        runtime_api: str,
        *,
        transport: Transport | None = None,
        attempts: int = 6,
        backoff: float = 0.05,
    ) -> None:
        host, _, port = runtime_api.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"runtime_api must be 'host:port', not {runtime_api!r}")
        self.transport: Transport = transport or HttpConnection(
            host, int(port), user_agent=USER_AGENT
        )
        self._attempts = attempts
        self._backoff = backoff
        self._runtime_api = runtime_api
        connection = self.transport
        self._pipeline = (
            connection
            if isinstance(connection, HttpConnection) and connection.pipelining
            else None
        )
        # the response to a `next` sent behind the last response, if any
        self._pending_next: asyncio.Future[HttpResponse] | None = None

    def spawn(self) -> RuntimeApiClient:
        """A client with a connection of its own, for one more poller.

        Requests on one HTTP/1.1 connection cannot overlap, and a poller's
        ``next`` stays open for as long as the sandbox waits for an event.
        """
        kinds: dict[type, str] = {
            HttpConnection: "protocol",
            StreamConnection: "streams",
            AiohttpTransport: "aiohttp",
        }
        name = kinds.get(type(self.transport), "protocol")
        if name == "protocol" and self._pipeline is None:
            name = "serial"
        return RuntimeApiClient(
            self._runtime_api,
            transport=transport_named(name, self._runtime_api),
            attempts=self._attempts,
            backoff=self._backoff,
        )

    async def next_invocation(self) -> Invocation:
        """Long-poll for the next event (no read timeout).

        When the last response went out with ``then_next``, the request is
        already on its way and only its answer is awaited.
        """
        response = None
        pending, self._pending_next = self._pending_next, None
        if pending is not None:
            assert self._pipeline is not None
            try:
                response = await self._pipeline.receive(pending)
            except ConnectionLost as exc:
                # no event came on that connection: ask again on a new one
                transport_logger.warning(
                    "GET %s (pipelined) failed (%s); asking again", _NEXT, exc
                )
        if response is None:
            response = await self._send("GET", _NEXT)
        if response.status != 200:
            raise RuntimeApiError("GET", _NEXT, response.status, response.body)
        return Invocation.from_next(response.headers, response.body)

    async def post_response(
        self,
        request_id: str,
        body: bytes,
        content_type: str = _JSON,
        *,
        then_next: bool = False,
    ) -> bool:
        """Post the result of ``request_id``; False when Lambda refused it (4xx).

        ``then_next`` sends the next ``next`` right behind it, for the
        following ``next_invocation`` to wait on (a no-op on transports that
        cannot pipeline); no other request may be made on this client before
        that call.
        """
        path = f"{_BASE}/invocation/{request_id}/response"
        headers = {"Content-Type": content_type}
        if then_next and self._pipeline is not None and self._pending_next is None:
            accepted = await self._post_then_next(path, body, headers)
            if accepted is not None:
                return accepted
        return self._accepted(
            "POST", path, await self._send("POST", path, body, headers)
        )

    async def post_response_then_next(
        self, request_id: str, body: bytes, content_type: str = _JSON
    ) -> Invocation:
        """``post_response(..., then_next=True)``, then ``next_invocation()``."""
        await self.post_response(request_id, body, content_type, then_next=True)
        return await self.next_invocation()

    async def post_error(self, request_id: str, error: ErrorPayload) -> bool:
        path = f"{_BASE}/invocation/{request_id}/error"
        headers = {"Content-Type": _JSON, wire.ERROR_TYPE: error.error_type}
        response = await self._send("POST", path, error.to_json(), headers)
        return self._accepted("POST", path, response)

    async def post_init_error(self, error: ErrorPayload) -> bool:
        path = f"{_BASE}/init/error"
        headers = {"Content-Type": _JSON, wire.ERROR_TYPE: error.error_type}
        response = await self._send("POST", path, error.to_json(), headers)
        return self._accepted("POST", path, response)

    async def restore_next(self) -> None:
        """SnapStart: returns once the sandbox was restored from the snapshot."""
        path = f"{_BASE}/restore/next"
        response = await self._send("GET", path)
        if response.status != 200:
            raise RuntimeApiError("GET", path, response.status, response.body)

    async def post_restore_error(self, error: ErrorPayload) -> bool:
        path = f"{_BASE}/restore/error"
        headers = {"Content-Type": _JSON, wire.ERROR_TYPE: error.error_type}
        response = await self._send("POST", path, error.to_json(), headers)
        return self._accepted("POST", path, response)

    async def aclose(self) -> None:
        self._pending_next = None
        await self.transport.aclose()

    async def _post_then_next(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> bool | None:
        """The POST with a ``next`` behind it; None: post the usual way instead.

        Falling back is safe: a connection that failed before the 202 may or
        may not have delivered the POST, and the retry posts it again, as
        ``_send`` does for any lost request.  Lambda takes one answer per
        request id and refuses a second (4xx), so a repeat never answers an
        invocation twice.
        """
        assert self._pipeline is not None
        requests = (Request("POST", path, body, headers), _NEXT_REQUEST)
        try:
            posted, self._pending_next = await self._pipeline.send(requests)
        except ConnectionLost:
            return None  # nothing was sent
        try:
            response = await self._pipeline.receive(posted)
        except ConnectionLost as exc:
            self._pending_next = None
            transport_logger.warning(
                "POST %s (pipelined) failed (%s); posting again", path, exc
            )
            return None
        except BaseException:
            self._pending_next = None  # cancelled: the connection is closed
            raise
        if response.status >= 500:
            # the runtime exits on this; the `next` behind it is abandoned
            self._pending_next = None
            self._pipeline.close()
        return self._accepted("POST", path, response)

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        if self._pending_next is not None:
            raise RuntimeError(
                f"cannot send {method} {path}: a pipelined next is waiting on "
                "this connection; call next_invocation() first"
            )
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                return await self.transport.request(method, path, body, headers)
            except ConnectionLost as exc:
                if attempt == self._attempts:
                    raise RuntimeApiUnavailable(
                        f"the Runtime API did not answer {method} {path} after "
                        f"{attempt} attempts; last error: {exc}"
                    ) from exc
                transport_logger.warning(
                    "%s %s failed (%s); retrying in %.0f ms",
                    method,
                    path,
                    exc,
                    delay * 1000,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _accepted(method: str, path: str, response: HttpResponse) -> bool:
        if 200 <= response.status < 300:
            return True
        if response.status >= 500:
            raise RuntimeApiError(method, path, response.status, response.body)
        transport_logger.warning(
            "%s %s was refused with %d: %s",
            method,
            path,
            response.status,
            response.body[:300].decode("utf-8", "replace").strip(),
        )
        return False
