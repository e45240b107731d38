"""The HTTP/1.1 server under the Runtime and Extensions APIs.

aiohttp's server de-chunks a request body itself and drops its trailers (3.14
has no API that exposes them), yet a streamed ``/response`` reports a failure
exactly there (runtime-api.md A.6). So the Runtime API socket is served by this
small server instead, which does what RAPID's needs and no more:

- requests are served one after another on each keep-alive connection, so a
  runtime that pipelines its ``/response`` and next ``/next`` is answered in
  order;
- a body reaches its handler piece by piece as it arrives, with its trailers
  once it has ended;
- a handler whose client goes away is cancelled, so a runtime killed during a
  long poll is never handed an event (what aiohttp's ``handler_cancellation``
  did before).
"""

from __future__ import annotations

import asyncio
import http
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from multidict import CIMultiDict, CIMultiDictProxy

from ._logging import logger

__all__ = ["Body", "HttpServer", "IncompleteBody", "Request", "Response", "Router"]

# Bounds a request head, a chunk-size line and the StreamReader's buffer.
_LINE_LIMIT: Final = 64 * 1024
_PIECE: Final = 64 * 1024
_MAX_TRAILERS: Final = 32
# What is still read of a body its handler left unread before the connection
# is given up; a larger rest is cheaper to drop with the connection.
_DRAIN_LIMIT: Final = 8 * 1024 * 1024

_TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class IncompleteBody(Exception):
    """The body ended before its framing said it would, or the framing is broken."""


class Body:
    """A request body as it arrives: ``Content-Length`` or chunked, with trailers.

    Iterate it for the pieces (at most 64 KiB each, as they come off the
    socket); ``trailers`` holds what followed the last chunk once iteration is
    over. A handler that stops early can call ``abandon()``, and the
    connection closes after its response instead of reading the rest.
    """

    def __init__(
        self, reader: asyncio.StreamReader, *, length: int, chunked: bool
    ) -> None:
        self._reader = reader
        self._chunked = chunked
        self._remaining = length  # of the body, or of the current chunk
        self._done = not chunked and length == 0
        self.abandoned = False
        self.trailers: CIMultiDict[str] = CIMultiDict()

    @property
    def done(self) -> bool:
        return self._done

    def abandon(self) -> None:
        """Leave the rest unread; the connection closes after the response."""
        self.abandoned = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._done:
            piece = await self._next_piece()
            if piece:
                yield piece

    async def read(self) -> bytes:
        """The whole body (for small bodies only)."""
        return b"".join([piece async for piece in self])

    async def drain(self) -> bool:
        """Read what the handler left; False if the connection cannot go on."""
        if self.abandoned:
            return False
        drained = 0
        try:
            async for piece in self:
                drained += len(piece)
                if drained > _DRAIN_LIMIT:
                    return False
        except IncompleteBody:
            return False
        return True

    async def _next_piece(self) -> bytes:
        try:
            if not self._chunked:
                return await self._read_some()
            if self._remaining == 0:
                self._remaining = await self._chunk_size()
                if self._remaining == 0:
                    await self._read_trailers()
                    self._done = True
                    return b""
            piece = await self._read_some()
            if self._remaining == 0 and await self._reader.readexactly(2) != b"\r\n":
                raise IncompleteBody("a chunk does not end with CRLF")
            return piece
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise IncompleteBody(f"the body was cut short: {exc}") from None

    async def _read_some(self) -> bytes:
        piece = await self._reader.read(min(self._remaining, _PIECE))
        if not piece:
            raise IncompleteBody(f"{self._remaining} more bytes were announced")
        self._remaining -= len(piece)
        if not self._chunked and self._remaining == 0:
            self._done = True
        return piece

    async def _chunk_size(self) -> int:
        line = await self._reader.readuntil(b"\r\n")
        size = line.split(b";", 1)[0].strip()
        if not size or size.strip(b"0123456789abcdefABCDEF"):
            raise IncompleteBody(f"bad chunk size line {line[:40]!r}")
        return int(size, 16)

    async def _read_trailers(self) -> None:
        for _ in range(_MAX_TRAILERS + 1):
            line = await self._reader.readuntil(b"\r\n")
            if line == b"\r\n":
                return
            name, value = _header(line[:-2])
            self.trailers.add(name, value)
        raise IncompleteBody(f"more than {_MAX_TRAILERS} trailers")


@dataclass(eq=False)
class Request:
    """One request as a route handler sees it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: Body
    transport: asyncio.BaseTransport | None
    match_info: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """A complete response; RAPID's are all small JSON documents."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class Router:
    """Routes by method and path; ``{name}`` matches one path segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
        self._routes.append((method, re.compile(pattern), handler))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = []
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method == method:
                return handler, match.groupdict()
            allowed.append(route_method)
        if allowed:
            return _refuse(405, "Method Not Allowed", {"Allow": ", ".join(allowed)})
        return _refuse(404, "404 page not found")


def _refuse(
    status: int, text: str, headers: Mapping[str, str] | None = None
) -> tuple[Handler, dict[str, str]]:
    # Go's net/http words these the way RAPID's clients have seen them.
    response = Response(
        status, (text + "\n").encode(), "text/plain; charset=utf-8", headers or {}
    )

    async def refuse(request: Request) -> Response:
        return response

    return refuse, {}


class _BadRequest(Exception):
    pass


def _header(line: bytes) -> tuple[str, str]:
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise _BadRequest(f"bad header line {line[:40]!r}")
    return name.decode("ascii"), value.strip(b" \t").decode("latin-1")


def _parse_head(head: bytes) -> tuple[str, str, str, CIMultiDict[str]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise _BadRequest(f"bad request line {lines[0][:60]!r}")
    method, target, version = (part.decode("latin-1") for part in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(f"unsupported version {version!r}")
    if target.startswith(("http://", "https://")):
        target = "/" + target.split("/", 3)[-1]  # absolute-form
    path = unquote(target.split("?", 1)[0])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, value = _header(line)
        headers.add(name, value)
    return method, path, version, headers


def _framing(headers: CIMultiDict[str]) -> tuple[int, bool]:
    """The body's length (0 when chunked) and whether it is chunked."""
    encoding = headers.get("Transfer-Encoding", "").lower()
    if "chunked" in encoding:
        return 0, True
    length = headers.get("Content-Length")
    if length is None:
        return 0, False
    if not length.isdigit():
        raise _BadRequest(f"bad Content-Length {length!r}")
    return int(length), False


def _render(response: Response, *, close: bool) -> bytes:
    reason = http.HTTPStatus(response.status).phrase
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    if response.content_type is not None:
        lines.append(f"Content-Type: {response.content_type}")
    lines.append(f"Content-Length: {len(response.body)}")
    lines.extend(f"{name}: {value}" for name, value in response.headers.items())
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body


class _Connection(asyncio.Protocol):
    """One client connection, its requests served in order."""

    def __init__(self, router: Router, connections: set[_Connection]) -> None:
        self._router = router
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._reader: asyncio.StreamReader | None = None
        self._task: asyncio.Task[None] | None = None
        self._handling = False
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._reader = asyncio.StreamReader(limit=_LINE_LIMIT)
        self._reader.set_transport(transport)
        self._connections.add(self)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        assert self._reader is not None
        self._reader.feed_data(data)

    def eof_received(self) -> bool | None:
        # The client is done with the connection; so is the server (a
        # half-closed socket would keep a poll's handler waiting).
        assert self._reader is not None
        self._reader.feed_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._connections.discard(self)
        if self._reader is not None:
            self._reader.feed_eof()
        # A handler runs in the connection's task (one loop turn less
        # between its answer and the write): cancelling the task cancels it.
        if self._handling and self._task is not None:
            self._task.cancel()

    def close(self) -> asyncio.Task[None] | None:
        """Drop the connection; returns its task, cancelled, to be awaited."""
        if self._transport is not None:
            self._transport.close()
        if self._task is not None:
            self._task.cancel()
        return self._task

    async def _serve(self) -> None:
        assert self._reader is not None and self._transport is not None
        try:
            while not self._lost:
                try:
                    head = await self._reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed between requests
                except asyncio.LimitOverrunError:
                    self._send(Response(431, content_type=None), close=True)
                    return
                if not await self._serve_one(head):
                    return
        finally:
            self._transport.close()

    async def _serve_one(self, head: bytes) -> bool:
        """Serve one request; False when the connection must close."""
        assert self._reader is not None and self._transport is not None
        try:
            method, path, version, headers = _parse_head(head)
            length, chunked = _framing(headers)
        except (_BadRequest, UnicodeDecodeError) as exc:
            logger.debug("Runtime API: bad request: %s", exc)
            self._send(Response(400, content_type=None), close=True)
            return False

        if headers.get("Expect", "").lower() == "100-continue":
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = Body(self._reader, length=length, chunked=chunked)
        handler, match = self._router.resolve(method, path)
        request = Request(
            method, path, CIMultiDictProxy(headers), body, self._transport
        )
        request.match_info.update(match)

        self._handling = True
        try:
            response = await handler(request)
        except IncompleteBody as exc:
            # The client stopped half way through its body (it is closing,
            # or was killed): nothing more can be read on this connection.
            logger.debug("Runtime API: %s %s: %s", method, path, exc)
            self._send(Response(400, content_type=None), close=True)
            return False
        except Exception:
            logger.exception("Runtime API: %s %s failed", method, path)
            response = Response(500, b"Internal Server Error\n", "text/plain")
        finally:
            self._handling = False

        connection = headers.get("Connection", "").lower()
        close = connection == "close" or (
            version == "HTTP/1.0" and connection != "keep-alive"
        )
        if not body.done and not close:
            close = not await body.drain()
        self._send(response, close=close)
        return not close

    def _send(self, response: Response, *, close: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_render(response, close=close))
        if close:
            transport.close()


class HttpServer:
    """Serves a ``Router`` on one loopback socket."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound host and port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._router, self._connections), host, port
        )
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop listening and drop every connection (waiting polls are cancelled)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [connection.close() for connection in list(self._connections)]
        cancelled = {task for task in tasks if task is not None}
        if cancelled:
            await asyncio.wait(cancelled)
        await server.wait_closed()
