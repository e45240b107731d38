"""A lean HTTP/1.1 client for the Runtime API.

The Runtime API is plain HTTP/1.1 on loopback, one request at a time per
connection.  A general-purpose client (aiohttp) costs about 200 ms to import and
a few hundred microseconds per request; this one is a keep-alive connection over
asyncio streams that writes each request in one call and parses exactly what the
Runtime API sends back (Content-Length or chunked bodies).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from ._log import transport_logger

# A connect to loopback either succeeds at once or the service is gone.
CONNECT_TIMEOUT = 1.0
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class ConnectionLost(ConnectionError):
    """The connection closed or reset before a whole response arrived."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``host:port``.

    Requests are serialised by the caller (one poller owns one connection).
    Any transport failure closes the connection and raises ``ConnectionLost``;
    the next request opens a new one.
    """

    def __init__(self, host: str, port: int, *, user_agent: str) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._prefix = f"Host: {host}:{port}\r\nUser-Agent: {user_agent}\r\n".encode(
            "latin-1"
        )

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        reader, writer = await self._connection()

        # the whole request goes out in one write
        head = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), self._prefix]
        if headers:
            for name, value in headers.items():
                head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body or method != "GET":
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        try:
            head.append(body)
            writer.writelines(head)
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
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ConnectionLost(f"malformed status line {lines[0]!r}")
        status = int(parts[1])

        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""

        if headers.get("connection", "").lower() == "close":
            self.close()
        return HttpResponse(status, headers, body)


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
