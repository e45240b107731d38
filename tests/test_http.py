"""The lean HTTP/1.1 client against a raw server that sends scripted bytes."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from statefulrt import ErrorPayload, RuntimeApiError
from statefulrt._client import RuntimeApiClient
from statefulrt._http import (
    ConnectionLost,
    HttpConnection,
    HttpResponse,
    Request,
    StreamConnection,
    parse_head,
)

Connection = HttpConnection | StreamConnection
EVENT = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Lambda-Runtime-Aws-Request-Id: r-1\r\n"
    b"Lambda-Runtime-Trace-Id: Root=1-AbC;Sampled=1\r\n"
    b"Content-Length: 7\r\n\r\n"
    b'{"a":1}'
)
ACCEPTED = b'HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n{"status":"OK"}'
REFUSED = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 46\r\n\r\n"
    b'{"errorType":"InvalidRequestID","errorMessage"'
)
FAILED = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}"
# A scripted piece that closes the connection instead of sending bytes.
HANG_UP = b""


@dataclass
class ScriptedServer:
    """Answers each whole request with the next scripted reply, in pieces.

    A reply may be empty (that request gets its answer with a later one, as
    pipelined answers can arrive) and may contain ``HANG_UP``.
    """

    replies: list[list[bytes]] = field(default_factory=list)  # pieces per reply
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    close_after: bool = False  # close the connection after each reply
    port: int = 0

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                pieces = self.replies.pop(0)
                for piece in pieces:
                    if piece is HANG_UP:
                        break
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.001)
                if self.close_after or HANG_UP in pieces:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    listener = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    scripted.port = listener.sockets[0].getsockname()[1]
    try:
        yield scripted
    finally:
        listener.close()
        await listener.wait_closed()


KINDS: list[Callable[[str, int], Connection]] = [
    lambda host, port: HttpConnection(host, port, user_agent="test/1"),
    lambda host, port: StreamConnection(host, port, user_agent="test/1"),
]


@pytest.fixture(params=KINDS, ids=["protocol", "streams"])
def connect(
    request: pytest.FixtureRequest, server: ScriptedServer
) -> Callable[[], Connection]:
    kind: Callable[[str, int], Connection] = request.param
    return lambda: kind("127.0.0.1", server.port)


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[index : index + 1] for index in range(len(data))]


async def test_http_response_in_one_piece(
    server: ScriptedServer, connect: Callable[[], Connection]
) -> None:
    server.replies = [[EVENT]]
    connection = connect()
    response = await connection.request("GET", "/next")
    connection.close()
    assert response == HttpResponse(
        200,
        {
            "content-type": "application/json",
            "lambda-runtime-aws-request-id": "r-1",
            "lambda-runtime-trace-id": "Root=1-AbC;Sampled=1",
            "content-length": "7",
        },
        b'{"a":1}',
    )
    assert server.requests == [
        b"GET /next HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: test/1\r\n\r\n"
        % server.port
    ]


async def test_http_response_byte_by_byte(
    server: ScriptedServer, connect: Callable[[], Connection]
) -> None:
    server.replies = [byte_by_byte(EVENT)]
    connection = connect()
    response = await connection.request("GET", "/next")
    connection.close()
    assert response.status == 200
    assert response.headers["lambda-runtime-aws-request-id"] == "r-1"
    assert response.body == b'{"a":1}'


async def test_http_keep_alive_reuses_one_connection(
    server: ScriptedServer, connect: Callable[[], Connection]
) -> None:
    server.replies = [[EVENT], [ACCEPTED], [EVENT]]
    connection = connect()
    first = await connection.request("GET", "/next")
    posted = await connection.request(
        "POST", "/r-1/response", b"null", {"Content-Type": "application/json"}
    )
    second = await connection.request("GET", "/next")
    connection.close()
    assert (first.status, posted.status, second.status) == (200, 202, 200)
    assert posted.body == b'{"status":"OK"}'
    assert server.connections == 1
    assert server.requests[1].endswith(
        b"Content-Type: application/json\r\nContent-Length: 4\r\n\r\nnull"
    )


async def test_http_large_body_both_ways(
    server: ScriptedServer, connect: Callable[[], Connection]
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, above the single-write limit
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    server.replies = [[reply[:1000], reply[1000:70_000], reply[70_000:]]]
    connection = connect()
    response = await connection.request("POST", "/big", body)
    connection.close()
    assert response.body == body
    assert server.requests[0].endswith(b"\r\n\r\n" + body)


@pytest.mark.parametrize("trailers", [b"", b"X-Checksum: 1\r\n"])
async def test_http_chunked_body(
    server: ScriptedServer, connect: Callable[[], Connection], trailers: bytes
) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n"
        + trailers
        + b"\r\n"
    )
    server.replies = [byte_by_byte(reply), [ACCEPTED]]
    connection = connect()
    response = await connection.request("GET", "/chunked")
    after = await connection.request("GET", "/after")
    connection.close()
    assert response.body == b"Wikipedia in \r\n\r\nchunks."
    assert after.status == 202
    assert server.connections == 1


async def test_http_connection_close_reconnects(
    server: ScriptedServer, connect: Callable[[], Connection]
) -> None:
    server.close_after = True
    closing = b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    server.replies = [[closing], [EVENT]]
    connection = connect()
    first = await connection.request("POST", "/one", b"1")
    second = await connection.request("GET", "/next")
    connection.close()
    assert (first.status, second.status) == (202, 200)
    assert server.connections == 2


async def test_http_closed_mid_response_is_connection_lost(
    server: ScriptedServer, connect: Callable[[], Connection]
) -> None:
    server.close_after = True
    server.replies = [[EVENT[:40]], [EVENT]]
    connection = connect()
    with pytest.raises(ConnectionLost):
        await connection.request("GET", "/next")
    retried = await connection.request("GET", "/next")
    connection.close()
    assert retried.headers["lambda-runtime-aws-request-id"] == "r-1"
    assert server.connections == 2


async def test_http_malformed_status_line_is_connection_lost(
    server: ScriptedServer, connect: Callable[[], Connection]
) -> None:
    server.replies = [[b"SPDY/3 200 OK\r\nContent-Length: 0\r\n\r\n"]]
    connection = connect()
    with pytest.raises(ConnectionLost, match="malformed"):
        await connection.request("GET", "/next")
    connection.close()


async def test_http_nothing_listening_is_connection_lost() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    connection = HttpConnection("127.0.0.1", port, user_agent="test/1")
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await connection.request("GET", "/next")


async def test_http_cancelled_request_closes_the_connection(
    server: ScriptedServer,
) -> None:
    server.replies = [[EVENT[:10]], [EVENT]]
    connection = HttpConnection("127.0.0.1", server.port, user_agent="test/1")
    request = asyncio.create_task(connection.request("GET", "/next"))
    await asyncio.sleep(0.05)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    response = await connection.request("GET", "/next")
    connection.close()
    assert response.status == 200
    assert server.connections == 2


def test_http_parse_head_keeps_value_case_and_lowers_names() -> None:
    status, headers = parse_head(
        b"HTTP/1.1 404 Not Found\r\nX-Amzn-Trace: Root=AbC\r\nEmpty:\r\nno colon"
    )
    assert status == 404
    assert headers == {"x-amzn-trace": "Root=AbC", "empty": ""}


def test_http_parse_head_refuses_a_non_http_status_line() -> None:
    with pytest.raises(ValueError, match="malformed status line"):
        parse_head(b"ICY 200 OK")


# -- pipelining: several requests in one write, responses matched in order --

PAIR = ACCEPTED + EVENT
POST = Request("POST", "/r-1/response", b"null", {"Content-Type": "application/json"})
NEXT = Request("GET", "/next")


async def _pair(connection: HttpConnection) -> tuple[HttpResponse, HttpResponse]:
    posted, event = await connection.send([POST, NEXT])
    return await connection.receive(posted), await connection.receive(event)


async def test_http_pipelined_responses_in_one_read(server: ScriptedServer) -> None:
    server.replies = [[], [PAIR], [EVENT]]
    connection = HttpConnection("127.0.0.1", server.port, user_agent="test/1")
    posted, event = await _pair(connection)
    after = await connection.request("GET", "/next")
    connection.close()
    assert (posted.status, posted.body) == (202, b'{"status":"OK"}')
    assert (event.status, event.body) == (200, b'{"a":1}')
    assert event.headers["lambda-runtime-aws-request-id"] == "r-1"
    assert after.status == 200
    assert server.connections == 1
    assert [request.split(b" ", 2)[:2] for request in server.requests] == [
        [b"POST", b"/r-1/response"],
        [b"GET", b"/next"],
        [b"GET", b"/next"],
    ]
    assert server.requests[0].endswith(b"Content-Length: 4\r\n\r\nnull")


@pytest.mark.parametrize(
    "split",
    [1, 16, len(ACCEPTED) - 1, len(ACCEPTED), len(ACCEPTED) + 1, len(ACCEPTED) + 60]
    + [len(PAIR) - 7, len(PAIR) - 1],
)
async def test_http_pipelined_responses_split_anywhere(
    server: ScriptedServer, split: int
) -> None:
    server.replies = [[], [PAIR[:split], PAIR[split:]]]
    connection = HttpConnection("127.0.0.1", server.port, user_agent="test/1")
    posted, event = await _pair(connection)
    connection.close()
    assert (posted.status, posted.body) == (202, b'{"status":"OK"}')
    assert (event.status, event.body) == (200, b'{"a":1}')


async def test_http_pipelined_responses_byte_by_byte(server: ScriptedServer) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    server.replies = [[], [], byte_by_byte(PAIR + chunked)]
    connection = HttpConnection("127.0.0.1", server.port, user_agent="test/1")
    responses = await connection.send([POST, NEXT, Request("GET", "/chunked")])
    received = [await connection.receive(response) for response in responses]
    connection.close()
    assert [(r.status, r.body) for r in received] == [
        (202, b'{"status":"OK"}'),
        (200, b'{"a":1}'),
        (200, b"ok"),
    ]


async def test_http_pipelined_connection_close_fails_the_rest(
    server: ScriptedServer,
) -> None:
    closing = b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    server.replies = [[], [closing + EVENT]]
    connection = HttpConnection("127.0.0.1", server.port, user_agent="test/1")
    posted, event = await connection.send([POST, NEXT])
    assert (await connection.receive(posted)).status == 202
    with pytest.raises(ConnectionLost):
        await connection.receive(event)
    connection.close()


async def test_http_pipelined_hang_up_between_them(server: ScriptedServer) -> None:
    server.replies = [[], [ACCEPTED, HANG_UP], [EVENT]]
    connection = HttpConnection("127.0.0.1", server.port, user_agent="test/1")
    posted, event = await connection.send([POST, NEXT])
    assert (await connection.receive(posted)).status == 202
    with pytest.raises(ConnectionLost, match="closed the connection"):
        await connection.receive(event)
    again = await connection.request("GET", "/next")
    connection.close()
    assert again.status == 200
    assert server.connections == 2


def _client(server: ScriptedServer, *, pipelining: bool = True) -> RuntimeApiClient:
    connection = HttpConnection(
        "127.0.0.1", server.port, user_agent="test/1", pipelining=pipelining
    )
    return RuntimeApiClient(
        f"127.0.0.1:{server.port}", transport=connection, attempts=2, backoff=0.001
    )


def _request_lines(server: ScriptedServer) -> list[bytes]:
    return [request.split(b" HTTP/1.1")[0] for request in server.requests]


async def test_client_pipelined_response_then_next(server: ScriptedServer) -> None:
    server.replies = [[], [PAIR]]
    client = _client(server)
    invocation = await client.post_response_then_next("r-0", b"null")
    await client.aclose()
    assert invocation.request_id == "r-1"
    assert invocation.body == b'{"a":1}'
    assert _request_lines(server) == [
        b"POST /2018-06-01/runtime/invocation/r-0/response",
        b"GET /2018-06-01/runtime/invocation/next",
    ]
    assert server.connections == 1


async def test_client_pipelined_refused_response_still_gets_the_event(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.replies = [[], [REFUSED + EVENT]]
    client = _client(server)
    with caplog.at_level(logging.WARNING, logger="statefulrt"):
        accepted = await client.post_response("r-0", b"null", then_next=True)
        invocation = await client.next_invocation()
    await client.aclose()
    assert accepted is False
    assert invocation.request_id == "r-1"
    assert "was refused with 400" in caplog.text
    assert server.connections == 1


async def test_client_pipelined_5xx_raises_and_abandons_the_next(
    server: ScriptedServer,
) -> None:
    server.replies = [[], [FAILED]]
    client = _client(server)
    with pytest.raises(RuntimeApiError) as caught:
        await client.post_response("r-0", b"null", then_next=True)
    assert caught.value.status == 500
    server.replies = [[EVENT]]
    invocation = await client.next_invocation()  # a fresh GET, new connection
    await client.aclose()
    assert invocation.request_id == "r-1"
    assert server.connections == 2


async def test_client_pipelined_hang_up_after_202_asks_again(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.replies = [[], [ACCEPTED, HANG_UP], [EVENT]]
    client = _client(server)
    assert await client.post_response("r-0", b"null", then_next=True) is True
    with caplog.at_level(logging.WARNING, logger="statefulrt"):
        invocation = await client.next_invocation()
    await client.aclose()
    assert invocation.request_id == "r-1"
    assert _request_lines(server) == [
        b"POST /2018-06-01/runtime/invocation/r-0/response",
        b"GET /2018-06-01/runtime/invocation/next",
        b"GET /2018-06-01/runtime/invocation/next",
    ]
    assert server.connections == 2
    assert "(pipelined) failed" in caplog.text


async def test_client_pipelined_hang_up_before_202_posts_again(
    server: ScriptedServer,
) -> None:
    # The first POST reached the server, its answer did not reach the client:
    # it is posted again, as any lost request is, and Lambda would refuse the
    # repeat if the first had counted.  The event is asked for afterwards.
    server.replies = [[], [HANG_UP], [REFUSED], [EVENT]]
    client = _client(server)
    accepted = await client.post_response("r-0", b"null", then_next=True)
    invocation = await client.next_invocation()
    await client.aclose()
    assert accepted is False
    assert invocation.request_id == "r-1"
    assert _request_lines(server) == [
        b"POST /2018-06-01/runtime/invocation/r-0/response",
        b"GET /2018-06-01/runtime/invocation/next",
        b"POST /2018-06-01/runtime/invocation/r-0/response",
        b"GET /2018-06-01/runtime/invocation/next",
    ]


async def test_client_pipelined_next_cancelled_closes_the_connection(
    server: ScriptedServer,
) -> None:
    server.replies = [[], [ACCEPTED], [EVENT]]
    client = _client(server)
    assert await client.post_response("r-0", b"null", then_next=True) is True
    waiting = asyncio.create_task(client.next_invocation())
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    invocation = await client.next_invocation()
    await client.aclose()
    assert invocation.request_id == "r-1"
    assert server.connections == 2


async def test_client_request_behind_a_pipelined_next_is_refused(
    server: ScriptedServer,
) -> None:
    server.replies = [[], [ACCEPTED]]
    client = _client(server)
    assert await client.post_response("r-0", b"null", then_next=True) is True
    with pytest.raises(RuntimeError, match="a pipelined next is waiting"):
        await client.post_error("r-0", ErrorPayload("E", "m"))
    await client.aclose()


async def test_client_serial_transport_never_pipelines(server: ScriptedServer) -> None:
    server.replies = [[ACCEPTED], [EVENT]]
    client = _client(server, pipelining=False)
    assert await client.post_response("r-0", b"null", then_next=True) is True
    await asyncio.sleep(0.02)
    sent_with_the_post = len(server.requests)
    invocation = await client.next_invocation()
    await client.aclose()
    assert sent_with_the_post == 1
    assert invocation.request_id == "r-1"
    assert client.spawn().transport.pipelining is False  # type: ignore[attr-defined]


ECHO_RUNTIME = """
import asyncio
import os

from statefulrt._client import RuntimeApiClient


async def main():
    client = RuntimeApiClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    invocation = await client.next_invocation()
    while True:
        invocation = await client.post_response_then_next(
            invocation.request_id, invocation.body
        )


asyncio.run(main())
"""


@pytest.mark.parametrize("freeze", [False, True], ids=["running", "frozen"])
async def test_http_pipelining_against_the_emulator(
    tmp_path: Path, freeze: bool
) -> None:
    # aiohttp's server (the emulator's Runtime API) takes the response and
    # the `next` behind it in order, freezing the runtime in between or not.
    from statefulrt.emulator import Emulator

    (tmp_path / "echo_runtime.py").write_text(ECHO_RUNTIME)
    emulator = Emulator(
        [sys.executable, "echo_runtime.py"],
        cwd=tmp_path,
        freeze=freeze,
        report_stream=None,
    )
    await emulator.start()
    try:
        results = [await emulator.invoke({"n": n}) for n in range(20)]
    finally:
        await emulator.close()
    assert [(r.status, r.json(), r.function_error) for r in results] == [
        (200, {"n": n}, None) for n in range(20)
    ]
    assert emulator.starts == 1
