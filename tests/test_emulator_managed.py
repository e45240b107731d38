"""Lambda Managed Instances in the emulator: concurrent pollers, no freeze.

statefulrt's real runtime proves the behaviour a function sees (overlapping
invocations, backpressure, a timeout that does not stop the code); where the
exact Runtime and Extensions API answers are under test, the test plays the
runtime (and an extension) over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from statefulrt.emulator import Emulator

APP = """
import asyncio, os, time

async def sleepy(event, context):
    start = time.time()
    await asyncio.sleep(event.get("sleep", 0.2))
    return {
        "start": start,
        "end": time.time(),
        "pid": os.getpid(),
        "concurrency": os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY"),
        "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
    }
"""

SLEEPER = "import time\ntime.sleep(60)\n"

# An external extension that tries INVOKE, settles for SHUTDOWN, and records
# what it was told.
EXTENSION = """#!{python}
import http.client, json, os

host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
seen = []

def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(host, int(port))
    connection.request(method, "/2020-01-01/extension" + path, body, headers or {{}})
    response = connection.getresponse()
    return response, response.read()

for events in (["INVOKE", "SHUTDOWN"], ["SHUTDOWN"]):
    response, body = call(
        "POST", "/register", json.dumps({{"events": events}}),
        {{"Lambda-Extension-Name": "watcher"}},
    )
    seen.append([response.status, body.decode()])
identifier = response.getheader("Lambda-Extension-Identifier")
headers = {{"Lambda-Extension-Identifier": identifier}}
_, body = call("GET", "/event/next", headers=headers)
seen.append(json.loads(body)["eventType"])
with open(os.environ["SEEN"], "w") as out:
    json.dump(seen, out)
"""


@asynccontextmanager
async def running(tmp_path: Path, **options: Any) -> AsyncIterator[Emulator]:
    (tmp_path / "app.py").write_text(APP)
    command = [sys.executable, "-m", "statefulrt", "app.sleepy"]
    options.setdefault("report_stream", None)
    async with Emulator(command, cwd=tmp_path, **options) as emu:
        yield emu


@asynccontextmanager
async def played(tmp_path: Path, **options: Any) -> AsyncIterator[Emulator]:
    (tmp_path / "runtime.py").write_text(SLEEPER)
    options.setdefault("report_stream", None)
    async with Emulator([sys.executable, "runtime.py"], cwd=tmp_path, **options) as emu:
        yield emu


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold in time")


class Runtime:
    """The test playing a Runtime API client."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self._session = session
        self._base = f"http://{emu.runtime_api}"

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(10):
            async with self._session.request(
                method, self._base + path, data=body, headers=headers or {}
            ) as response:
                return response.status, dict(response.headers), await response.read()

    async def next(self) -> tuple[str, Any]:
        """The request id and the event of the next invocation."""
        path = "/2018-06-01/runtime/invocation/next"
        status, headers, body = await self.request("GET", path)
        assert status == 200
        return headers["Lambda-Runtime-Aws-Request-Id"], orjson.loads(body)

    async def answer(
        self, request_id: str, kind: str = "response"
    ) -> tuple[int, bytes]:
        path = f"/2018-06-01/runtime/invocation/{request_id}/{kind}"
        status, _, body = await self.request("POST", path, b'{"ok": true}')
        return status, body

    async def register(self, name: str, events: list[str]) -> tuple[int, bytes]:
        body = orjson.dumps({"events": events})
        headers = {"Lambda-Extension-Name": name}
        path = "/2020-01-01/extension/register"
        status, _, answer = await self.request("POST", path, body, headers)
        return status, answer


@asynccontextmanager
async def runtime_client(emu: Emulator) -> AsyncIterator[Runtime]:
    async with aiohttp.ClientSession() as session:
        yield Runtime(session, emu)


def rapid_error(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorMessage": message, "errorType": error_type}) + b"\n"


# -- statefulrt's runtime -----------------------------------------------------


async def test_managed_invocations_overlap_and_a_fifth_is_unavailable(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, max_concurrency=4) as emu:
        await emu.restart()
        async with asyncio.timeout(10):
            await emu.wait_pollers(4)
        results = await asyncio.gather(*(emu.invoke({}) for _ in range(5)))
        await emu.wait_idle()

    served = [result for result in results if result.status == 200]
    [refused] = [result for result in results if result.status != 200]
    assert len(served) == 4
    answers = [result.json() for result in served]
    # All four ran at once: each started before any of them ended.
    assert max(answer["start"] for answer in answers) < min(
        answer["end"] for answer in answers
    )
    assert len({answer["pid"] for answer in answers}) == 1
    assert {(answer["concurrency"], answer["init_type"]) for answer in answers} == {
        ("4", "lambda-managed-instances")
    }
    assert (refused.status, refused.function_error) == (400, None)
    assert refused.json() == {
        "errorType": "Runtime.Unavailable",
        "errorMessage": f"RequestId: {refused.request_id} Error: no runtime poller "
        "is idle (all busy, AWS_LAMBDA_MAX_CONCURRENCY=4); retry once an "
        "invocation has finished",
    }
    # Only invocations that ran are reported.
    assert sorted(report.request_id for report in emu.reports) == sorted(
        result.request_id for result in served
    )
    assert emu.starts == 1


async def test_managed_timeout_fails_the_caller_but_not_the_runtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="statefulrt.emulator")
    async with running(tmp_path, max_concurrency=2, timeout=0.3) as emu:
        late = await emu.invoke({"sleep": 0.8})
        pid = emu.pid
        quick = await emu.invoke({"sleep": 0})
        await until(lambda: "refused with 410 InvokeTimeout" in caplog.text)
        after_late_answer = await emu.invoke({"sleep": 0})
        await emu.wait_idle()

    assert late.function_error == "Unhandled"
    assert late.json() == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {late.request_id} Error: Task timed out "
        "after 0.30 seconds",
    }
    assert quick.json()["pid"] == pid
    assert after_late_answer.json()["pid"] == pid
    assert emu.starts == 1
    assert emu.shutdowns == [("spindown", "SIGTERM", 0)]
    assert [report.status for report in emu.reports] == [
        "timeout",
        "success",
        "success",
    ]
    assert emu.reports[0].duration_ms == 300.0


# -- the Runtime API, played ----------------------------------------------------


async def test_managed_answers_are_matched_by_request_id(tmp_path: Path) -> None:
    invalid = rapid_error("InvalidRequestID", "Invalid request ID")
    accepted = (202, b'{"status":"OK"}\n')
    async with played(tmp_path, max_concurrency=2, timeout=1.0) as emu:
        async with runtime_client(emu) as runtime:
            invokes = [asyncio.create_task(emu.invoke({"n": 1}))]
            first_id, _ = await runtime.next()  # init ends with the first poller
            polls = [asyncio.create_task(runtime.next()) for _ in range(2)]
            await until(lambda: emu.idle_pollers == 2)
            invokes += [asyncio.create_task(emu.invoke({"n": n})) for n in (2, 3)]
            async with asyncio.timeout(10):
                handed = {
                    event["n"]: request_id
                    for request_id, event in await asyncio.gather(*polls)
                }

            # Answered in any order, by id; a repeat or an unknown id is 400.
            answers = [
                await runtime.answer(handed[2]),
                await runtime.answer(handed[2]),
                await runtime.answer("no-such-id", "error"),
                await runtime.answer(first_id, "error"),
            ]
            # The third times out: one late answer gets 410, then it is unknown.
            async with asyncio.timeout(10):
                results = [await invoke for invoke in invokes]
            late = [await runtime.answer(handed[3]), await runtime.answer(handed[3])]

    assert answers == [accepted, (400, invalid), (400, invalid), accepted]
    assert late == [
        (410, rapid_error("InvokeTimeout", "Invoke timeout")),
        (400, invalid),
    ]
    assert [result.function_error for result in results] == [
        "Unhandled",
        None,
        "Unhandled",
    ]
    assert results[0].json() == {"ok": True}
    assert results[1].json() == {"ok": True}
    assert results[2].json()["errorType"] == "Sandbox.Timedout"


async def test_managed_extensions_may_subscribe_to_shutdown_only(
    tmp_path: Path,
) -> None:
    extensions = tmp_path / "extensions"
    extensions.mkdir()
    external = extensions / "watcher"
    external.write_text(EXTENSION.format(python=sys.executable))
    external.chmod(external.stat().st_mode | stat.S_IXUSR)
    seen = tmp_path / "seen.json"
    options: dict[str, Any] = {"extensions_dir": extensions, "env": {"SEEN": str(seen)}}

    # The played runtime never polls, so init times out and the environment
    # is shut down (SHUTDOWN reaches the extension) after the registrations.
    async with played(tmp_path, max_concurrency=2, init_timeout=1, **options) as emu:
        async with runtime_client(emu) as runtime:
            invoke = asyncio.create_task(emu.invoke({}))
            # The runtime starts once the external extension has registered.
            await until(lambda: emu.pid is not None)
            internal = [
                await runtime.register("inside", ["INVOKE"]),
                await runtime.register("inside", []),
            ]
        async with asyncio.timeout(10):
            await invoke
            await emu.wait_idle()  # the reset after the failed init

    refusal = rapid_error("Extension.InvalidEventType", "INVOKE: ErrorInvalidEventType")
    assert internal[0] == (403, refusal)
    assert internal[1][0] == 200
    external_refusal, external_accepted, event = orjson.loads(seen.read_bytes())
    assert external_refusal == [403, refusal.decode()]
    assert (external_accepted[0], event) == (200, "SHUTDOWN")


def test_managed_options_are_checked() -> None:
    command = [sys.executable, "-c", "pass"]
    with pytest.raises(ValueError, match="max_concurrency must be 1 or more, got 0"):
        Emulator(command, max_concurrency=0)
    with pytest.raises(ValueError, match="freeze cannot be combined"):
        Emulator(command, max_concurrency=2, freeze=True)
    with pytest.raises(ValueError, match="snap_start and max_concurrency"):
        Emulator(command, max_concurrency=2, snap_start=True)
