"""Streamed responses: chunked posts, the HTTP prelude and error trailers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
from runtime_api_fake import FakeRuntimeApi
from runtime_harness import running

from statefulrt import Context, HttpStreamingResponse, ResponseStream, StreamingResponse
from statefulrt._streaming import post_stream


class RawServer:
    """Records one raw HTTP request and answers 202."""

    def __init__(self) -> None:
        self.raw = b""
        self.done = asyncio.Event()
        self.address = ""

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return server

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        data = b""
        while not data.endswith(b"\r\n\r\n") or b"0\r\n" not in data:
            piece = await reader.read(65536)
            if not piece:
                break
            data += piece
        self.raw = data
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n")
        writer.write(b'{"status":"OK"}')
        await writer.drain()
        writer.close()
        self.done.set()


async def _pieces(
    *items: bytes | str, fail: bool = False
) -> AsyncIterator[bytes | str]:
    for item in items:
        await asyncio.sleep(0)
        yield item
    if fail:
        raise RuntimeError("disk vanished")


async def _post(response: StreamingResponse) -> tuple[int, Any, bytes]:
    raw = RawServer()
    server = await raw.start()
    async with server:
        chunks = response.chunks()
        first = await anext(chunks, b"")
        status, error = await post_stream(raw.address, "req-1", response, first, chunks)
        await asyncio.wait_for(raw.done.wait(), 5)
    return status, error, raw.raw


async def test_stream_posts_chunks_with_streaming_headers() -> None:
    status, error, raw = await _post(
        StreamingResponse(_pieces(b"hello ", "wörld"), content_type="text/plain")
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert (status, error) == (202, None)
    assert head.split(b"\r\n") == [
        b"POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1",
        b"Host: " + raw_host(head),
        b"Lambda-Runtime-Function-Response-Mode: streaming",
        b"Content-Type: text/plain",
        b"Transfer-Encoding: chunked",
        b"Trailer: Lambda-Runtime-Function-Error-Type, "
        b"Lambda-Runtime-Function-Error-Body",
        b"Connection: close",
    ]
    assert body == b"6\r\nhello \r\n6\r\nw\xc3\xb6rld\r\n0\r\n\r\n"


def raw_host(head: bytes) -> bytes:
    line = next(line for line in head.split(b"\r\n") if line.startswith(b"Host: "))
    return line[len(b"Host: ") :]


async def test_stream_failure_mid_body_ends_with_error_trailers() -> None:
    status, error, raw = await _post(StreamingResponse(_pieces(b"part", fail=True)))
    assert status == 202
    assert error.error_type == "RuntimeError"
    body = raw.partition(b"\r\n\r\n")[2]
    assert body.startswith(
        b"4\r\npart\r\n0\r\nLambda-Runtime-Function-Error-Type: RuntimeError\r\n"
    )
    encoded = body.split(b"Lambda-Runtime-Function-Error-Body: ")[1].split(b"\r\n")[0]
    document = orjson.loads(base64.b64decode(encoded))
    assert (document["errorType"], document["errorMessage"]) == (
        "RuntimeError",
        "disk vanished",
    )
    assert body.endswith(b"\r\n\r\n")


async def test_stream_http_integration_prelude() -> None:
    response = HttpStreamingResponse(
        _pieces(b"<h1>hi</h1>"),
        status_code=201,
        headers={"Content-Type": "text/html"},
        cookies=["a=b"],
    )
    status, _, raw = await _post(response)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Type: application/vnd.awslambda.http-integration-response" in head
    prelude = (
        b'{"statusCode":201,"headers":{"Content-Type":"text/html"},"cookies":["a=b"]}'
        + b"\x00" * 8
        + b"<h1>hi</h1>"
    )
    assert body == b"%x\r\n" % len(prelude) + prelude + b"\r\n0\r\n\r\n"


async def test_stream_writer_style_handler() -> None:
    async def write(stream: ResponseStream) -> None:
        for n in range(3):
            await stream.write(f"line {n}\n")

    status, _, raw = await _post(StreamingResponse(write))
    body = raw.partition(b"\r\n\r\n")[2]
    assert body == b"7\r\nline 0\n\r\n7\r\nline 1\n\r\n7\r\nline 2\n\r\n0\r\n\r\n"


async def test_runtime_streams_an_async_generator(api: FakeRuntimeApi) -> None:
    async def handler(event: Any, context: Context) -> Any:
        async def body() -> AsyncIterator[bytes]:
            for n in range(event["n"]):
                yield b"%d," % n

        return body()

    async with running(api, handler):
        answer = await api.answer(api.push({"n": 4}))
    assert answer.kind == "response"
    assert answer.body == b"0,1,2,3,"
    assert answer.headers["Lambda-Runtime-Function-Response-Mode"] == "streaming"


async def test_runtime_stream_failing_before_first_byte_is_an_error(
    api: FakeRuntimeApi,
) -> None:
    async def handler(event: Any, context: Context) -> Any:
        return _pieces(fail=True)

    async with running(api, handler):
        answer = await api.answer(api.push({}))
        after = await api.answer(api.push({}))
    assert answer.kind == "error"
    assert answer.json()["errorMessage"] == "disk vanished"
    assert after.kind == "error"  # the loop went on to the next event
