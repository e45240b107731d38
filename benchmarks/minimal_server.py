"""The least a Lambda Runtime API can be, for timing runtimes against.

One ``asyncio.Protocol`` on 127.0.0.1, keep-alive, serving the two routes a
warm invocation uses: ``GET /2018-06-01/runtime/invocation/next`` (a ``{}``
event with the three headers every event carries) and ``POST
.../invocation/{id}/response`` (``202 {"status":"OK"}``).  ``.../error`` and
``.../init/error`` are accepted and counted, because a contender that reports
an error is a failed run, not a fast one.  Extension registration is answered
and the extension's ``event/next`` held open, as Lambda does, so a runtime that
registers one pays for it at cold start as it would on Lambda.

The server works in sessions, one per contender run.  A session has a budget
of events; once it is spent the next ``next`` is *parked* (left unanswered, as
Lambda leaves a runtime frozen), so each contender processes a bounded count.
Every ``next`` and every response is timestamped with ``perf_counter_ns`` as it
arrives, so the harness reads per-invocation time at the server, in the same
clock for every contender.

A session may expect several pollers (Managed Instances: concurrent ``next``
long-polls on their own connections).  Each ``next`` gets an event at once
while the budget lasts, whichever connection it came on, so every poller
has one in flight; the session is idle once ``pollers`` of them are parked.
Requests pipelined on one connection are answered in order, as Go's
net/http (Lambda's Runtime API) answers them.

Nothing here is clever on purpose: the fewer steps the server takes per
request, the less of its own noise ends up in the figures.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import cast

API_PREFIX = b"/2018-06-01/runtime"
NEXT_PATH = API_PREFIX + b"/invocation/next"
INVOCATION_PREFIX = API_PREFIX + b"/invocation/"
INIT_ERROR_PATH = API_PREFIX + b"/init/error"
EXTENSION_REGISTER_PATH = b"/2020-01-01/extension/register"
EXTENSION_NEXT_PATH = b"/2020-01-01/extension/event/next"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:bench"
# Lambda allows at most 15 minutes; longer than any run here.
DEADLINE_AHEAD_MS = 900_000

_MAX_HEAD_BYTES = 64 * 1024
_ACCEPTED = (
    b"HTTP/1.1 202 Accepted\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 15\r\n\r\n"
    b'{"status":"OK"}'
)
_REGISTERED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Lambda-Extension-Identifier: 00000000-0000-4000-8000-0000000e0e0e\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_LENGTH_REQUIRED = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\n\r\n"
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


@dataclass(eq=False)
class Session:
    """One contender run: its event budget and what the server saw of it."""

    budget: int
    serial: int = 0
    pollers: int = 1  # parked `next`s that make the session idle
    handed_out: int = 0
    next_ns: list[int] = field(default_factory=list)  # every `next`, parked too
    response_ns: list[int] = field(default_factory=list)
    # event out to its response in, per answered event
    latency_ns: list[int] = field(default_factory=list)
    errors: list[bytes] = field(default_factory=list)  # /error and /init/error
    protocol_errors: list[str] = field(default_factory=list)
    unknown_ids: int = 0
    connections: int = 0
    extensions: int = 0
    parked: list[_Connection] = field(default_factory=list)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # request ids handed out and not answered yet, with when they went out
    outstanding: dict[bytes, int] = field(default_factory=dict)

    @property
    def responses(self) -> int:
        return len(self.response_ns)

    def release(self, count: int) -> None:
        """Allow ``count`` more events; parked ``next``s are answered at once."""
        if count < 1:
            raise ValueError(f"release() needs a positive count, not {count}")
        self.budget += count
        self.idle.clear()
        while self.parked and self.handed_out < self.budget:
            self.parked.pop(0).send_event(self)

    def park(self, connection: _Connection) -> None:
        self.parked.append(connection)
        if len(self.parked) >= self.pollers:
            self.idle.set()

    def request_id(self, index: int) -> str:
        # shaped like the UUIDs Lambda sends, and cheap to make
        return f"{self.serial:08x}-0000-4000-8000-{index:012x}"


class RuntimeApiServer:
    """Serves sessions one at a time; ``start()`` binds an ephemeral port."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self._server: asyncio.Server | None = None
        self._serials = 0
        self.address = ""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), "127.0.0.1", 0
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def new_session(self, budget: int, pollers: int = 1) -> Session:
        """Start counting for a new contender; the previous session ends.

        The session is idle once ``pollers`` ``next`` requests are parked.
        """
        if pollers < 1:
            raise ValueError(f"a session needs at least one poller, not {pollers}")
        self._serials += 1
        self.session = Session(budget=budget, serial=self._serials, pollers=pollers)
        return self.session

    async def __aenter__(self) -> RuntimeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parse requests, answer from the session."""

    def __init__(self, server: RuntimeApiServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._continued = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        if self._server.session is not None:
            self._server.session.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        session = self._server.session
        if session is not None and self in session.parked:
            session.parked.remove(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and self._handle_one():
            pass

    def _handle_one(self) -> bool:
        """Handle one whole request from the buffer; False when it is short."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD_BYTES:
                self._refuse("request head too large")
            return False

        # request line and the two headers that decide framing
        lines = bytes(buffer[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._refuse(f"malformed request line {lines[0]!r}")
            return False
        method, target = parts[0], parts[1]
        length = 0
        expect_continue = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    self._refuse(f"bad Content-Length {value!r}")
                    return False
            elif name == b"transfer-encoding":
                self._send(_LENGTH_REQUIRED)
                self._refuse("chunked request bodies are not served here")
                return False
            elif name == b"expect" and value.strip().lower() == b"100-continue":
                expect_continue = True

        # the body, which may still be on its way
        total = end + 4 + length
        if len(buffer) < total:
            if expect_continue and not self._continued:
                self._continued = True
                self._send(_CONTINUE)
            return False
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        self._continued = False

        self._dispatch(method, target, body)
        return True

    def _dispatch(self, method: bytes, target: bytes, body: bytes) -> None:
        now = time.perf_counter_ns()
        session = self._server.session
        if session is None:
            self._send(_NOT_FOUND)
            return

        if method == b"GET" and target == NEXT_PATH:
            session.next_ns.append(now)
            if session.handed_out < session.budget:
                self.send_event(session, now)
            else:
                session.park(self)
            return

        if method == b"POST" and target.startswith(INVOCATION_PREFIX):
            request_id, _, kind = target[len(INVOCATION_PREFIX) :].partition(b"/")
            if kind == b"response":
                session.response_ns.append(now)
                handed = session.outstanding.pop(request_id, None)
                if handed is None:
                    session.unknown_ids += 1
                else:
                    session.latency_ns.append(now - handed)
            elif kind == b"error":
                session.errors.append(body)
            else:
                self._send(_NOT_FOUND)
                return
            self._send(_ACCEPTED)
            return

        if method == b"POST" and target == INIT_ERROR_PATH:
            session.errors.append(body)
            self._send(_ACCEPTED)
            return
        if method == b"POST" and target == EXTENSION_REGISTER_PATH:
            session.extensions += 1
            self._send(_REGISTERED)
            return
        if method == b"GET" and target == EXTENSION_NEXT_PATH:
            return  # held open: no extension event is ever sent here
        self._send(_NOT_FOUND)

    def send_event(self, session: Session, now: int = 0) -> None:
        session.handed_out += 1
        request_id = session.request_id(session.handed_out)
        session.outstanding[request_id.encode()] = now or time.perf_counter_ns()
        deadline = int(time.time() * 1000) + DEADLINE_AHEAD_MS
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/json\r\n"
            f"Lambda-Runtime-Aws-Request-Id: {request_id}\r\n"
            f"Lambda-Runtime-Deadline-Ms: {deadline}\r\n"
            f"Lambda-Runtime-Invoked-Function-Arn: {FUNCTION_ARN}\r\n"
            "Content-Length: 2\r\n\r\n{}"
        )
        self._send(head.encode("latin-1"))

    def _send(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _refuse(self, reason: str) -> None:
        session = self._server.session
        if session is not None:
            session.protocol_errors.append(reason)
        self._send(_BAD_REQUEST)
        if self._transport is not None:
            self._transport.close()
            self._transport = None


async def _serve_forever(budget: int) -> None:
    async with RuntimeApiServer() as server:
        session = server.new_session(budget)
        print(f"AWS_LAMBDA_RUNTIME_API={server.address}  ({budget} events)")
        await session.idle.wait()
        print(f"handed out {session.handed_out}, answered {session.responses}")


if __name__ == "__main__":
    # Standalone, for poking at a runtime by hand:
    #   python -m benchmarks.minimal_server 10
    import sys

    asyncio.run(_serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
