"""A lean HTTP/1.1 client for the Runtime API.

The Runtime API is plain HTTP/1.1 on loopback.  A general-purpose client
(aiohttp) costs about 200 ms to import and a few hundred microseconds per
request; this one is a keep-alive connection that writes each request in one
call and parses exactly what the Runtime API sends back (Content-Length or
chunked bodies).

``HttpConnection`` parses in an ``asyncio.Protocol``: bytes arrive in
``data_received`` and each whole response resolves the future of the request
it answers.  Requests may be pipelined (``send`` writes several at once):
HTTP/1.1 servers answer the requests of one connection in order, Go's
net/http (Lambda's Runtime API) and aiohttp's server included, so the futures
wait in a FIFO and responses are matched to them by position.
``StreamConnection`` does one request at a time over asyncio streams; it costs
one more hop per response (reader buffer, waiter, ``readuntil``,
``readexactly``) and is kept so ``benchmarks/`` can show the difference
(``STATEFULRT_TRANSPORT=streams``).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple, cast

from ._log import transport_logger

# A connect to loopback either succeeds at once or the service is gone.
CONNECT_TIMEOUT = 1.0
_MAX_HEADER_BYTES = 64 * 1024
# Bodies above this go out in a second write rather than being copied.
_JOIN_LIMIT = 64 * 1024


class HttpResponse(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class ConnectionLost(ConnectionError):
    """The connection closed or reset before a whole response arrived."""


class Request(NamedTuple):
    """One request for ``HttpConnection.send``."""

    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] | None = None


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``host:port``.

    One poller owns one connection.  ``request`` sends one request and waits
    for its response; ``send`` pipelines several in one write and ``receive``
    waits for each response in turn.  Any transport failure closes the
    connection and fails every response still expected with
    ``ConnectionLost``; the next request opens a new connection.
    """

    def __init__(
        self, host: str, port: int, *, user_agent: str, pipelining: bool = True
    ) -> None:
        self._host = host
        self._port = port
        self._prefix = _host_lines(host, port, user_agent)
        self._protocol: _ResponseProtocol | None = None
        #: whether callers may ``send`` several requests at once
        self.pipelining = pipelining
        # `next` is the same bytes every time: encode it once
        self._bodyless: dict[tuple[str, str], bytes] = {}

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()

        head = self._head(method, path, body, headers)
        try:
            return await protocol.exchange(head, body)
        except BaseException:
            # lost, or cancelled mid-request: the stream is in an unknown state
            self.close()
            raise

    async def send(
        self, requests: Sequence[Request]
    ) -> list[asyncio.Future[HttpResponse]]:
        """Write ``requests`` in one go; one future per response, in order.

        Await each with ``receive``, first to last.  Raises ``ConnectionLost``
        when no connection can be opened (nothing was sent then).
        """
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        parts: list[bytes] = []
        size = 0
        for method, path, body, headers in requests:
            head = self._head(method, path, body, headers)
            parts += (head, body)
            size += len(head) + len(body)
        return protocol.exchange_many(parts, len(requests), size)

    async def receive(self, response: asyncio.Future[HttpResponse]) -> HttpResponse:
        """The response ``response`` stands for, once it has arrived whole."""
        try:
            return await response
        except BaseException:
            # lost, or cancelled mid-response: the stream is in an unknown state
            self.close()
            raise

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
        self._protocol = None

    async def aclose(self) -> None:
        self.close()

    def _head(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None
    ) -> bytes:
        if body or headers or method != "GET":
            return _encode_head(method, path, self._prefix, body, headers)
        head = self._bodyless.get((method, path), b"")
        if not head:
            head = _encode_head(method, path, self._prefix, body, headers)
            self._bodyless[(method, path)] = head
        return head

    async def _connect(self) -> _ResponseProtocol:
        self.close()
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _ResponseProtocol(loop), self._host, self._port
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(
                f"cannot connect to {self._host}:{self._port}: {exc!r}"
            ) from exc
        transport_logger.debug("connected to %s:%d", self._host, self._port)
        self._protocol = protocol
        return protocol


class _ResponseProtocol(asyncio.Protocol):
    """Parses responses as bytes arrive and hands each to its request.

    ``_waiters`` holds one future per request sent and not yet answered, in the
    order they were sent: the next whole response belongs to the first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiters: deque[asyncio.Future[HttpResponse]] = deque()
        self._head: tuple[int, dict[str, str]] | None = None
        self._length = 0  # of the body, or -1 while reading chunks
        self._chunks: list[bytes] = []
        self.closed = False

    def exchange(self, head: bytes, body: bytes) -> asyncio.Future[HttpResponse]:
        """Send one request; the future resolves with its response."""
        transport = self._transport
        if transport is None or self.closed:
            raise ConnectionLost("the connection is closed")
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        if not body:
            transport.write(head)
        elif len(body) <= _JOIN_LIMIT:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        return waiter

    def exchange_many(
        self, parts: list[bytes], count: int, size: int
    ) -> list[asyncio.Future[HttpResponse]]:
        """Send ``count`` requests (heads and bodies, ``size`` bytes) at once."""
        transport = self._transport
        if transport is None or self.closed:
            raise ConnectionLost("the connection is closed")
        create = self._loop.create_future
        waiters = [create() for _ in range(count)]
        self._waiters.extend(waiters)
        if size <= _JOIN_LIMIT:
            transport.write(b"".join(parts))
        else:
            transport.writelines(parts)
        return waiters

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._fail(ConnectionLost("the connection was closed"))

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        waiters = self._waiters
        try:
            if waiters and not self._buffer and self._head is None:
                # The usual case on loopback: whole responses, one read (two
                # when pipelined), taken without copying through the buffer.
                start = 0
                while waiters:
                    whole = _whole(data, start)
                    if whole is None:
                        break
                    response, start = whole
                    waiter = waiters.popleft()
                    if not waiter.done():  # cancelled: its response is dropped
                        waiter.set_result(response)
                    if start == len(data):
                        return
                if start:
                    data = data[start:]
            self._buffer += data
            while waiters:
                parsed = self._parse()
                if parsed is None:
                    return
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(parsed)
                if parsed.headers.get("connection", "").lower() == "close":
                    self.close()  # what was sent after it will not be answered
                    return
        except ValueError as exc:
            self._fail(ConnectionLost(f"malformed response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        self._fail(ConnectionLost("the Runtime API closed the connection"))
        self.closed = True
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc!r}" if exc is not None else ""
        self._fail(ConnectionLost(f"the connection was lost{reason}"))
        self.closed = True
        self._transport = None

    # -- parsing -----------------------------------------------------------------

    def _parse(self) -> HttpResponse | None:
        """The whole response at the front of the buffer, or None if not yet."""
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEADER_BYTES:
                    raise ValueError(f"no end of headers in {len(buffer)} bytes")
                return None
            status, headers = parse_head(bytes(buffer[:end]))
            del buffer[: end + 4]
            self._head = status, headers
            if headers.get("transfer-encoding", "").lower() == "chunked":
                self._length = -1
            else:
                self._length = int(headers.get("content-length", "0"))

        if self._length >= 0:
            if len(buffer) < self._length:
                return None
            body = _take(buffer, self._length)
        else:
            chunked = self._read_chunks()
            if chunked is None:
                return None
            body = chunked

        status, headers = self._head
        self._head = None
        return HttpResponse(status, headers, body)

    def _read_chunks(self) -> bytes | None:
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                return None
            size = int(bytes(buffer[:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                # trailers, if any, then an empty line
                if buffer[line_end + 2 : line_end + 4] == b"\r\n":
                    consumed = line_end + 4
                else:
                    end = buffer.find(b"\r\n\r\n", line_end + 2)
                    if end < 0:
                        return None
                    consumed = end + 4
                del buffer[:consumed]
                body = b"".join(self._chunks)
                self._chunks = []
                return body
            if len(buffer) < line_end + 2 + size + 2:
                return None
            del buffer[: line_end + 2]
            self._chunks.append(_take(buffer, size))
            del buffer[:2]

    def _fail(self, exc: ConnectionLost) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)
                # Marked as seen: a pipelined response nobody awaits any more
                # (the runtime stopped) must not log "never retrieved".
                waiter.exception()


class StreamConnection:
    """``HttpConnection`` over asyncio streams, for comparison."""

    def __init__(self, host: str, port: int, *, user_agent: str) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._prefix = _host_lines(host, port, user_agent)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        reader, writer = await self._connection()
        try:
            writer.writelines(
                (_encode_head(method, path, self._prefix, body, headers), body)
            )
            await writer.drain()
            return await self._read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise ConnectionLost(f"{method} {path}: {exc!r}") from exc
        except BaseException:
            # cancelled mid-request: the stream is in an unknown state
            self.close()
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def aclose(self) -> None:
        self.close()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            if not self._reader.at_eof() and not self._writer.is_closing():
                return self._reader, self._writer
            self.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self._host, self._port, limit=_MAX_HEADER_BYTES
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(
                f"cannot connect to {self._host}:{self._port}: {exc!r}"
            ) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport_logger.debug("connected to %s:%d", self._host, self._port)
        self._reader, self._writer = reader, writer
        return reader, writer

    async def _read_response(self, reader: asyncio.StreamReader) -> HttpResponse:
        raw = await reader.readuntil(b"\r\n\r\n")
        try:
            status, headers = parse_head(raw[:-4])
        except ValueError as exc:
            raise ConnectionLost(f"malformed response: {exc}") from exc

        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""

        if headers.get("connection", "").lower() == "close":
            self.close()
        return HttpResponse(status, headers, body)


def parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    """The status and headers (names lower-cased) of a response head.

    ``raw`` stops before the blank line; raises ``ValueError`` when the status
    line is not HTTP/1.x.
    """
    lines = raw.decode("latin-1").split("\r\n")
    status_line = lines[0]
    if not status_line.startswith("HTTP/1.") or len(status_line) < 12:
        raise ValueError(f"malformed status line {status_line!r}")
    status = int(status_line[9:12])

    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return status, headers


def _whole(data: bytes, start: int) -> tuple[HttpResponse, int] | None:
    """The response at ``data[start:]`` and where it ends, if it is all there.

    Only plain ones: a Content-Length body and no ``Connection`` header.
    """
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return None
    status, headers = parse_head(data[start:end])
    if "transfer-encoding" in headers or "connection" in headers:
        return None
    stop = end + 4 + int(headers.get("content-length", "0"))
    if stop > len(data):
        return None
    return HttpResponse(status, headers, data[end + 4 : stop]), stop


def _host_lines(host: str, port: int, user_agent: str) -> bytes:
    return f"Host: {host}:{port}\r\nUser-Agent: {user_agent}\r\n".encode("latin-1")


def _encode_head(
    method: str,
    path: str,
    prefix: bytes,
    body: bytes,
    headers: dict[str, str] | None,
) -> bytes:
    parts = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), prefix]
    if headers:
        for name, value in headers.items():
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if body or method != "GET":
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    return b"".join(parts)


def _take(buffer: bytearray, size: int) -> bytes:
    """Remove and return the first ``size`` bytes of ``buffer``."""
    if len(buffer) == size:
        data = bytes(buffer)
        buffer.clear()
        return data
    data = bytes(memoryview(buffer)[:size])
    del buffer[:size]
    return data


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            # trailers, if any, end with an empty line
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
