"""Response streaming through the emulator: InvokeWithResponseStream, end to end.

statefulrt's real runtime streams where the behaviour a function author sees
is under test; where the exact wire is (trailers, the size limit, a body cut
short) the test plays the runtime over a raw socket and writes the chunked
body itself.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from statefulrt.emulator import Emulator, InvokeStream

APP = """
import asyncio, time
from statefulrt import HttpStreamingResponse

async def three(event, context):
    async def pieces():
        for n in range(3):
            if n:
                await asyncio.sleep(0.1)
            yield f'{{"n": {n}, "produced": {time.time()!r}}}\\n'
            if n == 0 and event.get("fail"):
                raise RuntimeError("disk vanished")
    return pieces()

async def page(event, context):
    async def pieces():
        yield "<h1>"
        yield "hi</h1>"
    return HttpStreamingResponse(
        pieces(), status_code=201, headers={"content-type": "text/html"},
        cookies=["a=1"],
    )
"""

SLEEPER = "import time\ntime.sleep(60)\n"
LIMIT = 200 * 1024 * 1024
BUFFERED_LIMIT = 6 * 1024 * 1024 + 100


@asynccontextmanager
async def running(
    tmp_path: Path, handler: str, **options: Any
) -> AsyncIterator[Emulator]:
    (tmp_path / "app.py").write_text(APP)
    command = [sys.executable, "-m", "statefulrt", handler]
    options.setdefault("report_stream", None)
    async with Emulator(command, cwd=tmp_path, handler=handler, **options) as emu:
        yield emu


@asynccontextmanager
async def played(tmp_path: Path) -> AsyncIterator[Emulator]:
    (tmp_path / "runtime.py").write_text(SLEEPER)
    command = [sys.executable, "runtime.py"]
    async with Emulator(command, cwd=tmp_path, timeout=10, report_stream=None) as emu:
        yield emu


async def read_all(response: InvokeStream) -> list[tuple[float, bytes]]:
    """Every piece with the moment it arrived."""
    return [(time.time(), piece) async for piece in response]


async def stream_of(emu: Emulator) -> tuple[InvokeStream, list[bytes]]:
    """A streaming invoke read to its end (the answer starts with the stream)."""
    async with emu.invoke_stream({}) as response:
        return response, [piece async for piece in response]


async def bounded(task: asyncio.Task[Any]) -> Any:
    async with asyncio.timeout(10):
        return await task


async def next_request_id(emu: Emulator) -> str:
    url = f"http://{emu.runtime_api}/2018-06-01/runtime/invocation/next"
    async with asyncio.timeout(10), aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return response.headers["Lambda-Runtime-Aws-Request-Id"]


async def post_stream(
    emu: Emulator,
    request_id: str,
    pieces: list[bytes],
    *,
    trailers: dict[str, str] | None = None,
    complete: bool = True,
) -> bytes:
    """Stream a response the way a runtime does; what the emulator answered."""
    host, port = emu.runtime_api.rsplit(":", 1)
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            f"POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n"
            f"Host: {emu.runtime_api}\r\n"
            "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
            "Content-Type: text/plain\r\n"
            "Transfer-Encoding: chunked\r\n"
            "Trailer: Lambda-Runtime-Function-Error-Type, "
            "Lambda-Runtime-Function-Error-Body\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode())
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        if not complete:
            writer.close()
            return b""
        ending = "".join(
            f"{name}: {value}\r\n" for name, value in (trailers or {}).items()
        )
        writer.write(b"0\r\n" + ending.encode() + b"\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer


def split_response(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


# -- statefulrt's runtime -----------------------------------------------------


async def test_stream_reaches_the_caller_piece_by_piece(tmp_path: Path) -> None:
    async with running(tmp_path, "app.three") as emu:
        async with emu.invoke_stream({}) as response:
            arrived = await read_all(response)
        buffered = await emu.invoke({})
        await emu.wait_idle()

    documents = [orjson.loads(piece) for _, piece in arrived]
    assert [document["n"] for document in documents] == [0, 1, 2]
    # The first piece was in the caller's hands before the last was produced.
    assert arrived[0][0] < documents[2]["produced"]
    assert (response.status, response.content_type) == (200, "application/octet-stream")
    assert (response.complete, response.error_code, response.function_error) == (
        True,
        None,
        None,
    )
    assert [line["n"] for line in map(orjson.loads, buffered.payload.splitlines())] == [
        0,
        1,
        2,
    ]
    assert [report.status for report in emu.reports] == ["success", "success"]


async def test_stream_failing_after_its_first_piece_reports_the_error(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "app.three") as emu:
        async with emu.invoke_stream({"fail": True}) as response:
            arrived = await read_all(response)
        buffered = await emu.invoke({"fail": True})
        await emu.wait_idle()

    assert [orjson.loads(piece)["n"] for _, piece in arrived] == [0]
    # The type is normalised as RAPID does; the document keeps the original.
    assert response.error_code == "Runtime.Unknown"
    error = response.error()
    assert (error["errorType"], error["errorMessage"]) == (
        "RuntimeError",
        "disk vanished",
    )
    assert error["requestId"] == response.request_id
    # A buffered caller gets the error instead of the partial body.
    assert buffered.function_error == "Unhandled"
    assert buffered.json()["errorMessage"] == "disk vanished"
    assert [report.status for report in emu.reports] == ["error", "error"]


async def test_http_streaming_response_keeps_its_prelude(tmp_path: Path) -> None:
    async with running(tmp_path, "app.page") as emu:
        async with emu.invoke_stream({}) as response:
            body = b"".join([piece async for piece in response])

    assert (
        response.content_type == "application/vnd.awslambda.http-integration-response"
    )
    assert body == (
        b'{"statusCode":201,"headers":{"content-type":"text/html"},"cookies":["a=1"]}'
        + b"\x00" * 8
        + b"<h1>hi</h1>"
    )


async def test_stream_is_read_by_boto3(tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3")

    def call(url: str, payload: bytes) -> dict[str, Any]:
        lambda_client = boto3.client(
            "lambda",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        answer = lambda_client.invoke_with_response_stream(
            FunctionName="function", Payload=payload
        )
        answer["events"] = list(answer.pop("EventStream"))
        return dict(answer)

    async with running(tmp_path, "app.three") as emu:
        answer = await asyncio.to_thread(call, emu.url, b'{"fail": true}')

    first, complete = answer["events"]
    assert orjson.loads(first["PayloadChunk"]["Payload"])["n"] == 0
    assert complete["InvokeComplete"]["ErrorCode"] == "Runtime.Unknown"
    details = orjson.loads(complete["InvokeComplete"]["ErrorDetails"])
    assert details["errorMessage"] == "disk vanished"
    assert (answer["StatusCode"], answer["ResponseStreamContentType"]) == (
        200,
        "application/octet-stream",
    )


# -- the wire, played ---------------------------------------------------------


async def test_stream_error_trailers_are_decoded(tmp_path: Path) -> None:
    error = b'{"errorType":"Function.Oops","errorMessage":"half way"}'
    trailers = {
        "Lambda-Runtime-Function-Error-Type": "Function.Oops",
        "Lambda-Runtime-Function-Error-Body": base64.b64encode(error).decode(),
    }
    async with played(tmp_path) as emu:
        caller = asyncio.create_task(stream_of(emu))
        request_id = await next_request_id(emu)
        answer = await post_stream(
            emu, request_id, [b"a" * 10, b"b"], trailers=trailers
        )
        response, pieces = await bounded(caller)

    status_line, body = split_response(answer)
    assert (status_line, body) == (b"HTTP/1.1 202 Accepted", b'{"status":"OK"}\n')
    assert (response.content_type, b"".join(pieces)) == ("text/plain", b"a" * 10 + b"b")
    assert (response.error_code, response.error_details) == (
        "Function.Oops",
        error.decode(),
    )


async def test_stream_past_the_limit_is_cut(tmp_path: Path) -> None:
    mebibyte = b"x" * (1024 * 1024)
    async with played(tmp_path) as emu:
        caller = asyncio.create_task(stream_of(emu))
        request_id = await next_request_id(emu)
        pieces = [mebibyte] * (LIMIT // len(mebibyte) + 1)
        answer = await post_stream(emu, request_id, pieces)
        response, received = await bounded(caller)

    status_line, body = split_response(answer)
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert orjson.loads(body) == {
        "errorMessage": f"Exceeded maximum allowed payload size ({LIMIT} bytes).",
        "errorType": "RequestEntityTooLarge",
    }
    assert sum(map(len, received)) == LIMIT
    assert response.error_code == "Function.ResponseSizeTooLarge"
    assert response.error() == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": "Response payload size exceeded maximum allowed payload "
        f"size ({LIMIT} bytes).",
    }


async def test_buffered_caller_keeps_the_buffered_limit(tmp_path: Path) -> None:
    async with played(tmp_path) as emu:
        invoke = asyncio.create_task(emu.invoke({}))
        request_id = await next_request_id(emu)
        answer = await post_stream(emu, request_id, [b"y" * BUFFERED_LIMIT, b"z"])
        async with asyncio.timeout(10):
            result = await invoke

    assert split_response(answer)[0] == b"HTTP/1.1 413 Request Entity Too Large"
    assert (result.function_error, result.json()["errorType"]) == (
        "Unhandled",
        "Function.ResponseSizeTooLarge",
    )


async def test_stream_cut_short_by_the_runtime_is_truncated(tmp_path: Path) -> None:
    async with played(tmp_path) as emu:
        caller = asyncio.create_task(stream_of(emu))
        request_id = await next_request_id(emu)
        await post_stream(emu, request_id, [b"partial"], complete=False)
        response, pieces = await bounded(caller)

    assert pieces == [b"partial"]
    assert response.error_code == "Runtime.TruncatedResponse"
    assert response.error()["errorMessage"] == (
        f"RequestId: {request_id} Error: the runtime's streamed response ended "
        "before its last chunk"
    )


async def test_stream_route_answers_a_buffered_response_and_an_error(
    tmp_path: Path,
) -> None:
    async with played(tmp_path) as emu, aiohttp.ClientSession() as session:
        base = f"http://{emu.runtime_api}/2018-06-01/runtime/invocation"
        caller = asyncio.create_task(stream_of(emu))
        request_id = await next_request_id(emu)
        async with session.post(f"{base}/{request_id}/response", data=b'{"whole": 1}'):
            pass
        plain, plain_pieces = await bounded(caller)

        caller = asyncio.create_task(stream_of(emu))
        request_id = await next_request_id(emu)
        error = b'{"errorType":"ValueError","errorMessage":"bad"}'
        async with session.post(f"{base}/{request_id}/error", data=error):
            pass
        failed, failed_pieces = await bounded(caller)

    assert (plain_pieces, plain.error_code, plain.complete) == (
        [b'{"whole": 1}'],
        None,
        True,
    )
    assert (failed_pieces, failed.function_error) == ([], "Unhandled")
    assert (failed.error_code, failed.error_details) == ("ValueError", error.decode())
