"""The Runtime API's own HTTP/1.1 server, over raw sockets.

What RAPID's clients rely on from the transport: pipelined requests answered
in order, a long poll given up when its client hangs up, ``Expect:
100-continue``, and a clean refusal of a malformed request.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from statefulrt.emulator import Emulator, InvokeResult

SLEEPER = "import time\ntime.sleep(60)\n"
NEXT = "/2018-06-01/runtime/invocation/next"


@asynccontextmanager
async def played(tmp_path: Path) -> AsyncIterator[Emulator]:
    (tmp_path / "runtime.py").write_text(SLEEPER)
    command = [sys.executable, "runtime.py"]
    async with Emulator(command, cwd=tmp_path, timeout=5, report_stream=None) as emu:
        yield emu


@asynccontextmanager
async def connection(
    emu: Emulator,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = emu.runtime_api.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        await writer.wait_closed()


def request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


async def read_response(
    reader: asyncio.StreamReader,
) -> tuple[bytes, dict[str, str], bytes]:
    """The status line, headers and body of one response."""
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        status, *lines = head[:-4].decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
    return status.encode(), headers, body


async def bounded(task: asyncio.Task[InvokeResult]) -> InvokeResult:
    async with asyncio.timeout(10):
        return await task


async def test_server_answers_pipelined_requests_in_order(tmp_path: Path) -> None:
    async with played(tmp_path) as emu, connection(emu) as (reader, writer):
        first = asyncio.create_task(emu.invoke({"n": 1}))
        writer.write(request("GET", NEXT))
        _, headers, event = await read_response(reader)
        request_id = headers["Lambda-Runtime-Aws-Request-Id"]

        # The answer and the next poll in one write, as a pipelining client
        # sends them.
        response = f"/2018-06-01/runtime/invocation/{request_id}/response"
        writer.write(request("POST", response, b'{"ok": 1}') + request("GET", NEXT))
        accepted = await read_response(reader)
        second = asyncio.create_task(emu.invoke({"n": 2}))
        _, _, second_event = await read_response(reader)
        answered = await bounded(first)
        second.cancel()

    assert event == b'{"n":1}'
    assert accepted == (
        b"HTTP/1.1 202 Accepted",
        {"Content-Type": "application/json", "Content-Length": "16"},
        b'{"status":"OK"}\n',
    )
    assert answered.json() == {"ok": 1}
    assert second_event == b'{"n":2}'


async def answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> bytes:
    """Take the next event and answer it with ``body``; the event."""
    writer.write(request("GET", NEXT))
    _, headers, event = await read_response(reader)
    request_id = headers["Lambda-Runtime-Aws-Request-Id"]
    path = f"/2018-06-01/runtime/invocation/{request_id}/response"
    writer.write(request("POST", path, body))
    await read_response(reader)
    return event


async def test_server_gives_up_a_poll_whose_client_hung_up(tmp_path: Path) -> None:
    async with played(tmp_path) as emu:
        async with connection(emu) as (reader, writer):
            first = asyncio.create_task(emu.invoke({"n": 1}))
            await answer(reader, writer, b"1")
            # Poll again (which ends the first invocation), then hang up.
            writer.write(request("GET", NEXT))
            await writer.drain()
            await bounded(first)
            await emu.wait_idle()
        await asyncio.sleep(0.05)  # the server sees the hang-up

        # A new poll is not refused as a second one, and gets the event.
        async with connection(emu) as (reader, writer):
            second = asyncio.create_task(emu.invoke({"n": 2}))
            event = await answer(reader, writer, b"2")
            result = await bounded(second)

    assert event == b'{"n":2}'
    assert result.json() == 2


async def test_server_honours_expect_continue(tmp_path: Path) -> None:
    async with played(tmp_path) as emu, connection(emu) as (reader, writer):
        writer.write(
            request("GET", "/2018-06-01/ping", extra="Expect: 100-continue\r\n")
        )
        async with asyncio.timeout(10):
            interim = await reader.readuntil(b"\r\n\r\n")
        status, _, body = await read_response(reader)

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert (status, body) == (b"HTTP/1.1 200 OK", b"pong")


async def test_server_refuses_a_malformed_request_and_closes(tmp_path: Path) -> None:
    async with played(tmp_path) as emu, connection(emu) as (reader, writer):
        writer.write(b"GET\r\n\r\n")
        status, headers, _ = await read_response(reader)
        async with asyncio.timeout(10):
            rest = await reader.read()

    assert (status, headers["Connection"], rest) == (
        b"HTTP/1.1 400 Bad Request",
        "close",
        b"",
    )
