"""Coroutines for the Runtime API endpoints, over a swappable transport.

The default transport is statefulrt's own HTTP/1.1 connection
(``_http.HttpConnection``); ``STATEFULRT_TRANSPORT`` picks another for
comparison (``benchmarks/`` measures them side by side):

``protocol``  the default, parsing in an ``asyncio.Protocol``
``streams``   the same client over asyncio streams
``aiohttp``   an aiohttp session (about 200 ms more to import)
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Protocol

from . import _wire as wire
from ._diagnostic import ErrorPayload
from ._exceptions import ConfigError, RuntimeApiError, RuntimeApiUnavailable
from ._http import ConnectionLost, HttpConnection, HttpResponse, StreamConnection
from ._invocation import Invocation
from ._log import transport_logger
from ._version import __version__

if TYPE_CHECKING:
    import aiohttp

# sys.version_info, not platform.python_version(): platform costs an import
_PYTHON = ".".join(str(part) for part in sys.version_info[:3])
USER_AGENT = f"statefulrt/{__version__} python/{_PYTHON}"

_BASE = f"/{wire.API_VERSION}/runtime"
_JSON = "application/json"

TRANSPORT_ENV = "STATEFULRT_TRANSPORT"
TRANSPORTS = ("protocol", "streams", "aiohttp")


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
        return RuntimeApiClient(
            self._runtime_api,
            transport=transport_named(name, self._runtime_api),
            attempts=self._attempts,
            backoff=self._backoff,
        )

    async def next_invocation(self) -> Invocation:
        """Long-poll for the next event (no read timeout)."""
        path = f"{_BASE}/invocation/next"
        response = await self._send("GET", path)
        if response.status != 200:
            raise RuntimeApiError("GET", path, response.status, response.body)
        return Invocation.from_next(response.headers, response.body)

    async def post_response(
        self, request_id: str, body: bytes, content_type: str = _JSON
    ) -> bool:
        path = f"{_BASE}/invocation/{request_id}/response"
        headers = {"Content-Type": content_type}
        return self._accepted(
            "POST", path, await self._send("POST", path, body, headers)
        )

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
        await self.transport.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
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
