"""Network faults on loopback, for the plugins' tests.

``TcpProxy`` forwards a port to a server and can drop every flow through it
the way an AWS NAT gateway drops an idle one: silently, then with a reset to
the next packet. ``FaultyHttpProxy`` forwards HTTP requests and answers a
chosen one with a 500, before or after the server handled it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_CHUNK = 64 * 1024
# Headers that describe one hop, not the message: aiohttp sets its own.
_HOP_HEADERS = frozenset(
    ("host", "content-length", "transfer-encoding", "connection", "expect")
)


@dataclass(eq=False)
class _Flow:
    reader: asyncio.StreamReader
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class TcpProxy:
    """``127.0.0.1:port`` forwarded to ``host:upstream_port``."""

    def __init__(self, host: str, upstream_port: int) -> None:
        self._upstream = (host, upstream_port)
        self._server: asyncio.Server | None = None
        self._flows: set[_Flow] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: connections accepted so far
        self.accepted = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for flow in list(self._flows):
            self._end(flow)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def drop_all(self) -> int:
        """Drop every open flow as a NAT gateway drops an idle one.

        The server side is closed at once; the client hears nothing until it
        sends something, and then gets a TCP reset. Returns how many flows.
        """
        flows = list(self._flows)
        for flow in flows:
            self._flows.discard(flow)
            for pump in flow.pumps:
                pump.cancel()
            flow.server.close()
            self._spawn(self._reset_on_next_packet(flow))
        return len(flows)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        flow = _Flow(reader, writer, up_writer)
        self._flows.add(flow)
        flow.pumps = [
            self._spawn(self._pump(reader, up_writer, flow)),
            self._spawn(self._pump(up_reader, writer, flow)),
        ]

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: _Flow
    ) -> None:
        try:
            while data := await src.read(_CHUNK):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        if flow in self._flows:  # one side hung up: so does the other
            self._end(flow)

    def _end(self, flow: _Flow) -> None:
        self._flows.discard(flow)
        flow.client.close()
        flow.server.close()

    async def _reset_on_next_packet(self, flow: _Flow) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await flow.reader.read(1)
        # SO_LINGER with a zero timeout makes close() send RST, not FIN.
        sock = flow.client.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        flow.client.transport.abort()

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


# Decides, for the n-th request (from 1), whether and when to fail it:
# None passes it through, "before" answers 500 without forwarding it, "after"
# forwards it and then answers 500 whatever the server said.
FaultPlan = Callable[[int, web.Request], str | None]


class FaultyHttpProxy:
    """An HTTP reverse proxy on loopback in front of ``upstream``."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.plan: FaultPlan = lambda n, request: None
        #: request headers (lowercase) not passed on: a store that ignores them
        self.drop_headers: set[str] = set()
        self.count = 0
        #: (method, path, what the proxy did) of every request
        self.log: list[tuple[str, str, str]] = []
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = self._runner.server
        assert server is not None
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.count += 1
        fault = self.plan(self.count, request)
        body = await request.read()
        if fault == "before":
            self.log.append((request.method, request.path, "500 before"))
            return _internal_error()

        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in _HOP_HEADERS | self.drop_headers
        }
        async with self._session.request(
            request.method,
            self._upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            reply_headers = {
                name: value
                for name, value in upstream.headers.items()
                if name.lower()
                not in ("content-length", "transfer-encoding", "connection")
            }
        if fault == "after":
            self.log.append((request.method, request.path, f"{status} then 500"))
            return _internal_error()
        self.log.append((request.method, request.path, str(status)))
        if request.method == "HEAD":
            # No body, but the object's length is what HEAD is asked for.
            reply = web.StreamResponse(status=status, headers=reply_headers)
            length = upstream.headers.get("Content-Length")
            if length is not None:
                reply.content_length = int(length)
            await reply.prepare(request)
            await reply.write_eof()
            return reply
        return web.Response(status=status, body=payload, headers=reply_headers)


def _internal_error() -> web.Response:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
        b"<Message>injected by the test proxy</Message></Error>"
    )
    return web.Response(status=500, body=body, content_type="application/xml")
