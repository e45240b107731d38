"""The emulator against fake runtimes: small scripts, or the test itself.

Where the exact Runtime API behaviour is under test, the "runtime" process is
a sleeper and the test plays the runtime over HTTP, so every status code and
body is observed first hand. ``tests/test_emulator_awslambdaric.py`` proves
the same emulator against the official client.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from statefulrt.emulator import Emulator, InvokeResult, Report

MAX_PAYLOAD = 6291556

# A runtime that never polls: the test drives the Runtime API itself.
SLEEPER = "import time\ntime.sleep(60)\n"

# A minimal runtime over http.client; the event says what to do.
FAKE_RUNTIME = r"""
import http.client, json, os, signal, subprocess, sys, time

host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)

def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(host, int(port))
    connection.request(method, "/2018-06-01" + path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response, response.read()

if os.environ.get("FAKE_INIT") == "hang":
    time.sleep(60)
if os.environ.get("FAKE_INIT") == "exit":
    sys.exit(7)
if os.environ.get("FAKE_INIT", "").startswith("error"):
    error = b'{"errorMessage":"no config","errorType":"Runtime.ConfigError"}'
    kind = {"Lambda-Runtime-Function-Error-Type": "Runtime.ConfigError"}
    seen = []
    for method, path in [
        ("POST", "/runtime/init/error"),
        ("POST", "/runtime/init/error"),
        ("GET", "/runtime/invocation/next"),
    ]:
        response, body = call(method, path, error if method == "POST" else None, kind)
        seen.append([response.status, body.decode()])
    with open("seen.json", "w") as file:
        json.dump(seen, file)
    if os.environ["FAKE_INIT"] == "error-then-hang":
        time.sleep(60)
    sys.exit(1)

while True:
    response, body = call("GET", "/runtime/invocation/next")
    request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(body)
    time.sleep(event.get("sleep", 0))
    if "exit" in event:
        os._exit(event["exit"])
    if event.get("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    if event.get("fork"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        event["child"] = child.pid
    if event.get("env"):
        prefixes = ("AWS_", "LAMBDA_", "_HANDLER", "TZ", "FAKE_")
        answer = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    else:
        answer = {"echo": event}
    call("POST", f"/runtime/invocation/{request_id}/response", json.dumps(answer))
    time.sleep(event.get("sleep_after", 0))
    if "exit_after" in event:
        os._exit(event["exit_after"])
"""


def go_json(value: object) -> bytes:
    """A body as RAPID renders it: compact JSON and a trailing newline."""
    return orjson.dumps(value) + b"\n"


def rapid_error(error_type: str, message: str) -> bytes:
    return go_json({"errorMessage": message, "errorType": error_type})


def transition(current: str, target: str) -> bytes:
    message = (
        f"State transition from {current} to {target} failed for runtime. "
        "Error: State transition is not allowed"
    )
    return rapid_error("InvalidStateTransition", message)


@asynccontextmanager
async def emulator(
    tmp_path: Path, script: str, **options: Any
) -> AsyncIterator[Emulator]:
    (tmp_path / "runtime.py").write_text(script)
    options.setdefault("report_stream", None)
    async with Emulator([sys.executable, "runtime.py"], cwd=tmp_path, **options) as emu:
        yield emu


class PlayedRuntime:
    """The test playing the runtime against the emulator's Runtime API."""

    def __init__(self, session: aiohttp.ClientSession, runtime_api: str) -> None:
        self._session = session
        self._base = f"http://{runtime_api}/2018-06-01"

    async def next(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(10):
            async with self._session.get(
                f"{self._base}/runtime/invocation/next"
            ) as response:
                return response.status, dict(response.headers), await response.read()

    async def post(
        self, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, str, bytes]:
        async with asyncio.timeout(10):
            async with self._session.post(
                f"{self._base}{path}", data=io.BytesIO(body), headers=headers or {}
            ) as response:
                content_type = response.headers.get("Content-Type", "")
                return response.status, content_type, await response.read()


@asynccontextmanager
async def played(emu: Emulator) -> AsyncIterator[PlayedRuntime]:
    async with aiohttp.ClientSession() as session:
        yield PlayedRuntime(session, emu.runtime_api)


async def bounded(task: asyncio.Task[InvokeResult]) -> InvokeResult:
    async with asyncio.timeout(10):
        return await task


@pytest.mark.asyncio
async def test_next_headers_carry_the_invocation(tmp_path: Path) -> None:
    async with emulator(tmp_path, SLEEPER, timeout=2, function_name="fn-1") as emu:
        async with played(emu) as runtime:
            invoke = asyncio.create_task(
                emu.invoke(
                    b'{"k": 1}',
                    client_context={"custom": {"a": "b"}},
                    tenant_id="tenant-7",
                    trace_id="Root=1-00000000-000000000000000000000001;Sampled=1",
                )
            )
            before = int(time.time() * 1000)
            status, headers, body = await runtime.next()
            after = int(time.time() * 1000)

            assert status == 200
            assert body == b'{"k": 1}'
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
            deadline = int(headers["Lambda-Runtime-Deadline-Ms"])
            assert before + 2000 <= deadline <= after + 2000
            assert headers["Lambda-Runtime-Invoked-Function-Arn"] == (
                "arn:aws:lambda:us-east-1:012345678912:function:fn-1"
            )
            assert headers["Lambda-Runtime-Trace-Id"] == (
                "Root=1-00000000-000000000000000000000001;Sampled=1"
            )
            assert orjson.loads(headers["Lambda-Runtime-Client-Context"]) == {
                "custom": {"a": "b"}
            }
            assert headers["Lambda-Runtime-Aws-Tenant-Id"] == "tenant-7"
            assert headers["Content-Type"] == "application/json"
            assert "Lambda-Runtime-Cognito-Identity" not in headers

            status, content_type, body = await runtime.post(
                f"/runtime/invocation/{request_id}/response",
                b"plain answer",
                {"Content-Type": "text/plain"},
            )
            assert (status, content_type, body) == (
                202,
                "application/json",
                b'{"status":"OK"}\n',
            )
            result = await bounded(invoke)

    assert result == InvokeResult(200, b"plain answer", None, request_id)


@pytest.mark.asyncio
async def test_response_content_type_reaches_the_caller(tmp_path: Path) -> None:
    async with emulator(tmp_path, SLEEPER) as emu:
        async with played(emu) as runtime, aiohttp.ClientSession() as session:
            request = session.post(
                f"{emu.url}/2015-03-31/functions/function/invocations", data=b"{}"
            )
            invoke = asyncio.create_task(request.__aenter__())
            _, headers, _ = await runtime.next()
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            await runtime.post(
                f"/runtime/invocation/{request_id}/response",
                b"<p>hi</p>",
                {"Content-Type": "text/html; charset=utf-8"},
            )
            async with asyncio.timeout(10):
                response = await invoke
                body = await response.read()
                response.release()

    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["X-Amzn-RequestId"] == request_id
    assert body == b"<p>hi</p>"


@pytest.mark.asyncio
async def test_next_generates_trace_id_and_omits_empty_headers(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, SLEEPER) as emu:
        async with played(emu) as runtime:
            invoke = asyncio.create_task(emu.invoke({}))
            _, headers, _ = await runtime.next()
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            await runtime.post(f"/runtime/invocation/{request_id}/response", b"{}")
            await bounded(invoke)

    assert re.fullmatch(
        r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0",
        headers["Lambda-Runtime-Trace-Id"],
    )
    for name in ("Client-Context", "Cognito-Identity", "Aws-Tenant-Id"):
        assert f"Lambda-Runtime-{name}" not in headers


@pytest.mark.asyncio
async def test_runtime_api_error_bodies_match_rapid(tmp_path: Path) -> None:
    async with emulator(tmp_path, SLEEPER) as emu:
        async with played(emu) as runtime:
            invoke = asyncio.create_task(emu.invoke({}))
            _, headers, _ = await runtime.next()
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            answer = f"/runtime/invocation/{request_id}/response"

            unknown = await runtime.post("/runtime/invocation/nope/response", b"{}")
            assert unknown == (
                400,
                "application/json",
                rapid_error("InvalidRequestID", "Invalid request ID"),
            )
            status, _, body = await runtime.next()
            assert (status, body) == (403, transition("Running", "Ready"))
            status, _, body = await runtime.post("/runtime/init/error", b"{}")
            assert (status, body) == (403, transition("Running", "InitError"))

            status, _, body = await runtime.post(
                answer, b"{}", {"Lambda-Runtime-Function-Response-Mode": "buffered"}
            )
            assert (status, body) == (
                400,
                rapid_error(
                    "InvalidFunctionResponseMode", "Invalid function response mode"
                ),
            )
            result = await bounded(invoke)

            status, _, body = await runtime.post(answer, b"{}")
            assert (status, body) == (
                403,
                transition("RuntimeResponseSentState", "InvocationResponse"),
            )
            status, _, body = await runtime.post(
                f"/runtime/invocation/{request_id}/error", b"{}"
            )
            assert (status, body) == (
                403,
                transition("RuntimeResponseSentState", "InvocationErrorResponse"),
            )

    assert result.function_error == "Unhandled"
    assert result.json()["errorType"] == "Runtime.InvalidResponseModeHeader"


@pytest.mark.asyncio
async def test_runtime_api_answer_for_a_finished_request_is_unknown(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, SLEEPER) as emu:
        async with played(emu) as runtime:
            invoke = asyncio.create_task(emu.invoke({}))
            _, headers, _ = await runtime.next()
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            path = f"/runtime/invocation/{request_id}/response"
            assert (await runtime.post(path, b"1"))[0] == 202
            await bounded(invoke)

            # Polling again ends the invocation; its id is no longer current.
            poll = asyncio.create_task(runtime.next())
            await emu.wait_idle()
            status, _, body = await runtime.post(path, b"2")
            assert (status, body) == (
                400,
                rapid_error("InvalidRequestID", "Invalid request ID"),
            )
            second = await runtime.next()
            assert (second[0], second[2]) == (403, transition("Ready", "Ready"))
            poll.cancel()
            await asyncio.wait({poll})

    assert [report.status for report in emu.reports] == ["success"]


@pytest.mark.asyncio
async def test_runtime_api_response_too_large_fails_the_caller(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, SLEEPER) as emu:
        async with played(emu) as runtime:
            invoke = asyncio.create_task(emu.invoke({}))
            _, headers, _ = await runtime.next()
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            status, _, body = await runtime.post(
                f"/runtime/invocation/{request_id}/response", b"x" * (MAX_PAYLOAD + 1)
            )
            result = await bounded(invoke)

    assert (status, body) == (
        413,
        rapid_error(
            "RequestEntityTooLarge",
            "Exceeded maximum allowed payload size (6291556 bytes).",
        ),
    )
    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": "Response payload size exceeded maximum allowed payload "
        "size (6291556 bytes).",
    }


@pytest.mark.asyncio
async def test_runtime_api_response_at_the_limit_is_delivered(
    tmp_path: Path,
) -> None:
    payload = b'"' + b"y" * (MAX_PAYLOAD - 2) + b'"'
    async with emulator(tmp_path, SLEEPER) as emu:
        async with played(emu) as runtime:
            invoke = asyncio.create_task(emu.invoke({}))
            _, headers, _ = await runtime.next()
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            status, _, _ = await runtime.post(
                f"/runtime/invocation/{request_id}/response", payload
            )
            result = await bounded(invoke)

    assert status == 202
    assert result.payload == payload
    assert result.function_error is None


@pytest.mark.asyncio
async def test_runtime_api_error_is_passed_to_the_caller(tmp_path: Path) -> None:
    async with emulator(tmp_path, SLEEPER) as emu:
        async with played(emu) as runtime:
            invoke = asyncio.create_task(emu.invoke({}))
            _, headers, _ = await runtime.next()
            path = f"/runtime/invocation/{headers['Lambda-Runtime-Aws-Request-Id']}"

            too_large = await runtime.post(f"{path}/error", b"e" * (1024 * 1024 + 1))
            assert too_large == (
                413,
                "application/json",
                rapid_error(
                    "RequestEntityTooLarge",
                    "Exceeded maximum allowed payload size (1048576 bytes).",
                ),
            )
            # Still unanswered: a smaller error is accepted.
            error = b'{"errorMessage":"bad","errorType":"Custom.Failure"}'
            accepted = await runtime.post(f"{path}/error", error)
            result = await bounded(invoke)

    assert accepted == (202, "application/json", b'{"status":"OK"}\n')
    assert result.payload == error
    assert result.function_error == "Unhandled"


@pytest.mark.asyncio
async def test_runtime_api_error_without_json_uses_the_type_header(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, SLEEPER) as emu:
        async with played(emu) as runtime:
            invoke = asyncio.create_task(emu.invoke({}))
            _, headers, _ = await runtime.next()
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            await runtime.post(
                f"/runtime/invocation/{request_id}/error",
                b"it broke\n",
                {"Lambda-Runtime-Function-Error-Type": "Runtime.Broken"},
            )
            result = await bounded(invoke)

    assert result.json() == {"errorType": "Runtime.Broken", "errorMessage": "it broke"}


@pytest.mark.asyncio
async def test_runtime_api_init_error_answers_the_caller(tmp_path: Path) -> None:
    options: dict[str, Any] = {"timeout": 30, "env": {"FAKE_INIT": "error"}}
    async with emulator(tmp_path, FAKE_RUNTIME, **options) as emu:
        started = time.monotonic()
        result = await emu.invoke({})
        elapsed = time.monotonic() - started
        await emu.wait_idle()

    assert elapsed < 5
    assert result.payload == (
        b'{"errorMessage":"no config","errorType":"Runtime.ConfigError"}'
    )
    assert result.function_error == "Unhandled"
    seen = orjson.loads((tmp_path / "seen.json").read_bytes())
    assert seen == [
        [202, '{"status":"OK"}\n'],
        [403, transition("InitError", "InitError").decode()],
        [403, transition("InitError", "Ready").decode()],
    ]
    [report] = emu.reports
    assert (report.status, report.error_type) == ("error", "Runtime.ConfigError")
    assert report.init_duration_ms is not None


@pytest.mark.asyncio
async def test_runtime_that_lingers_after_init_error_is_killed(
    tmp_path: Path,
) -> None:
    options: dict[str, Any] = {"timeout": 30, "env": {"FAKE_INIT": "error-then-hang"}}
    async with emulator(tmp_path, FAKE_RUNTIME, **options) as emu:
        result = await emu.invoke({})
        await emu.wait_idle()
        pid_after = emu.pid
        again = await emu.invoke({})
        await emu.wait_idle()

    assert result.json()["errorType"] == "Runtime.ConfigError"
    assert again.json()["errorType"] == "Runtime.ConfigError"
    assert pid_after is None
    assert emu.starts == 2
    assert [report.status for report in emu.reports] == ["error", "error"]


@pytest.mark.asyncio
async def test_runtime_api_ping_answers(tmp_path: Path) -> None:
    async with emulator(tmp_path, SLEEPER) as emu:
        async with aiohttp.ClientSession() as session:
            url = f"http://{emu.runtime_api}/2018-06-01/ping"
            async with session.get(url) as response:
                assert (response.status, await response.read()) == (200, b"pong")

    assert emu.starts == 0


@pytest.mark.asyncio
async def test_invoke_request_too_large_never_reaches_the_runtime(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME) as emu:
        result = await emu.invoke(b"x" * (MAX_PAYLOAD + 1))
        starts = emu.starts

    assert result.status == 413
    assert result.json() == {
        "errorType": "RequestTooLargeException",
        "errorMessage": "Request must be smaller than 6291556 bytes for the "
        "InvokeFunction operation",
    }
    assert starts == 0
    assert emu.reports == []


@pytest.mark.asyncio
async def test_invoke_bad_client_context_is_rejected(tmp_path: Path) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME) as emu:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{emu.url}/2015-03-31/functions/function/invocations",
                data=b"{}",
                headers={"X-Amz-Client-Context": "not base64!"},
            ) as response:
                status, body = response.status, await response.read()

    assert status == 400
    assert orjson.loads(body) == {
        "errorType": "InvalidRequestContentException",
        "errorMessage": "X-Amz-Client-Context must be a base64-encoded JSON object",
    }
    assert emu.starts == 0


@pytest.mark.asyncio
async def test_invoke_response_headers_name_the_request(tmp_path: Path) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME, function_name="orders") as emu:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{emu.url}/2015-03-31/functions/orders/invocations", data=b'{"n": 1}'
            ) as response:
                headers, body = response.headers, await response.read()

    assert orjson.loads(body) == {"echo": {"n": 1}}
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["X-Amzn-RequestId"])
    assert headers["X-Amz-Executed-Version"] == "$LATEST"
    assert headers["Content-Type"] == "application/json"
    assert "X-Amz-Function-Error" not in headers


@pytest.mark.asyncio
async def test_runtime_environment_is_lambdas(tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "function_name": "envcheck",
        "memory_mb": 256,
        "handler": "app.handler",
        "env": {"FAKE_EXTRA": "1", "AWS_REGION": "eu-west-1"},
    }
    async with emulator(tmp_path, FAKE_RUNTIME, **options) as emu:
        result = await emu.invoke({"env": True})
        runtime_api = emu.runtime_api

    env = result.json()
    assert re.fullmatch(
        r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}",
        env.pop("AWS_LAMBDA_LOG_STREAM_NAME"),
    )
    expected = {
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": "envcheck",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/envcheck",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "TZ": ":UTC",
        "_HANDLER": "app.handler",
        "FAKE_EXTRA": "1",
    }
    assert {name: env.get(name) for name in expected} == expected
    assert runtime_api.startswith("127.0.0.1:")


@pytest.mark.asyncio
async def test_timeout_kills_and_the_next_invoke_starts_cold(tmp_path: Path) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME, timeout=0.5) as emu:
        first = await emu.invoke({"sleep": 5})
        first_pid = emu.pid
        second = await emu.invoke({"n": 2})
        await emu.wait_idle()

    assert first.function_error == "Unhandled"
    assert first.json() == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {first.request_id} Error: Task timed out "
        "after 0.50 seconds",
    }
    assert first_pid is None
    assert second.json() == {"echo": {"n": 2}}
    assert emu.starts == 2
    timed_out, recovered = emu.reports
    assert (timed_out.status, timed_out.duration_ms) == ("timeout", 500.0)
    assert timed_out.billed_duration_ms == 500
    assert recovered.status == "success"
    assert recovered.init_duration_ms is not None


@pytest.mark.asyncio
async def test_post_response_work_past_the_deadline_is_killed(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME, timeout=0.5) as emu:
        started = time.monotonic()
        first = await emu.invoke({"sleep_after": 5, "n": 1})
        answered_in = time.monotonic() - started
        await emu.wait_idle()
        second = await emu.invoke({"n": 2})
        await emu.wait_idle()

    assert first.json() == {"echo": {"sleep_after": 5, "n": 1}}
    assert answered_in < 0.5
    assert [report.status for report in emu.reports] == ["timeout", "success"]
    assert second.json() == {"echo": {"n": 2}}
    assert emu.starts == 2


@pytest.mark.asyncio
async def test_crash_is_reported_before_the_timeout(tmp_path: Path) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME, timeout=20) as emu:
        started = time.monotonic()
        crashed = await emu.invoke({"exit": 3})
        elapsed = time.monotonic() - started
        killed = await emu.invoke({"kill": True})
        await emu.wait_idle()

    assert elapsed < 5
    assert crashed.json() == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {crashed.request_id} Error: Runtime exited "
        "with error: exit status 3",
    }
    assert killed.json()["errorMessage"] == (
        f"RequestId: {killed.request_id} Error: Runtime exited with error: "
        "signal: killed"
    )
    assert [(r.status, r.error_type) for r in emu.reports] == [
        ("crash", "Runtime.ExitError"),
        ("crash", "Runtime.ExitError"),
    ]
    assert emu.starts == 2


@pytest.mark.asyncio
async def test_exit_after_answering_is_a_crash_but_the_caller_keeps_its_answer(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME) as emu:
        first = await emu.invoke({"exit_after": 0})
        await emu.wait_idle()
        second = await emu.invoke({"n": 2})

    assert first.json() == {"echo": {"exit_after": 0}}
    assert first.function_error is None
    assert second.json() == {"echo": {"n": 2}}
    assert emu.reports[0].status == "crash"
    assert emu.starts == 2


@pytest.mark.asyncio
async def test_exit_during_init_is_an_exit_error(tmp_path: Path) -> None:
    options: dict[str, Any] = {"timeout": 20, "env": {"FAKE_INIT": "exit"}}
    async with emulator(tmp_path, FAKE_RUNTIME, **options) as emu:
        result = await emu.invoke({})
        await emu.wait_idle()

    assert result.json() == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {result.request_id} Error: Runtime exited "
        "with error: exit status 7",
    }
    [report] = emu.reports
    assert (report.status, report.error_type) == ("crash", "Runtime.ExitError")
    assert report.init_duration_ms is not None


@pytest.mark.asyncio
async def test_init_that_never_polls_is_cut_off(tmp_path: Path) -> None:
    options: dict[str, Any] = {"init_timeout": 0.5, "env": {"FAKE_INIT": "hang"}}
    async with emulator(tmp_path, FAKE_RUNTIME, timeout=1, **options) as emu:
        result = await emu.invoke({})
        pid_after = emu.pid
        await emu.wait_idle()

    assert result.json()["errorType"] == "Sandbox.Timedout"
    assert pid_after is None
    assert emu.reports[0].status == "timeout"


@pytest.mark.asyncio
async def test_missing_command_is_an_invalid_entrypoint(tmp_path: Path) -> None:
    missing = str(tmp_path / "bootstrap")
    async with Emulator([missing], cwd=tmp_path, report_stream=None) as emu:
        result = await emu.invoke({})
        await emu.wait_idle()

    assert result.json() == {
        "errorType": "Runtime.InvalidEntrypoint",
        "errorMessage": f"RequestId: {result.request_id} Error: fork/exec "
        f"{missing}: no such file or directory",
    }
    assert emu.reports[0].error_type == "Runtime.InvalidEntrypoint"
    assert emu.starts == 0


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaper counts)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.asyncio
async def test_reset_kills_what_the_runtime_forked(tmp_path: Path) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME, timeout=0.5) as emu:
        forked = await emu.invoke({"fork": True, "sleep_after": 5})
        await emu.wait_idle()

    child = forked.json()["echo"]["child"]
    for _ in range(200):
        if process_gone(child):
            break
        await asyncio.sleep(0.01)
    assert process_gone(child)
    assert emu.reports[0].status == "timeout"


@pytest.mark.asyncio
async def test_close_kills_the_runtime(tmp_path: Path) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME) as emu:
        await emu.invoke({})
        pid = emu.pid
        assert pid is not None

    assert emu.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.asyncio
async def test_close_answers_a_waiting_caller(tmp_path: Path) -> None:
    emu = Emulator([sys.executable, "-c", SLEEPER], cwd=tmp_path, report_stream=None)
    await emu.start()
    async with aiohttp.ClientSession() as session:
        try:
            request = session.post(
                f"{emu.url}/2015-03-31/functions/function/invocations", data=b"{}"
            )
            invoke = asyncio.create_task(request.__aenter__())
            async with played(emu) as runtime:
                status, _, _ = await runtime.next()
                assert status == 200
        finally:
            await emu.close()
        async with asyncio.timeout(10):
            response = await invoke
            status, body = response.status, await response.read()
            response.release()

    assert status == 500
    assert orjson.loads(body) == {
        "errorType": "ServiceException",
        "errorMessage": "The emulator shut down before the invocation finished.",
    }


@pytest.mark.asyncio
async def test_concurrent_invokes_each_get_their_own_answer(tmp_path: Path) -> None:
    async with emulator(tmp_path, FAKE_RUNTIME) as emu:
        results = await asyncio.gather(*(emu.invoke({"n": n}) for n in range(20)))
        await emu.wait_idle()

    assert [result.json() for result in results] == [
        {"echo": {"n": n}} for n in range(20)
    ]
    assert len({result.request_id for result in results}) == 20
    assert [r.request_id for r in emu.reports] == [r.request_id for r in results]
    assert emu.starts == 1


@pytest.mark.asyncio
async def test_report_lines_are_lambdas(tmp_path: Path) -> None:
    stream = io.StringIO()
    async with emulator(tmp_path, FAKE_RUNTIME, report_stream=stream) as emu:
        result = await emu.invoke({})
        await emu.wait_idle()

    [report] = emu.reports
    assert stream.getvalue() == (
        f"START RequestId: {result.request_id} Version: $LATEST\n"
        f"END RequestId: {result.request_id}\n"
        f"{report.line()}\n"
    )


def test_report_line_formats_every_field() -> None:
    report = Report.build(
        "abc",
        duration_ms=12.3449,
        memory_size_mb=128,
        max_memory_used_mb=45,
        init_duration_ms=123.456,
        status="timeout",
    )

    assert report.billed_duration_ms == 13
    assert report.line() == (
        "REPORT RequestId: abc\tDuration: 12.34 ms\tBilled Duration: 13 ms\t"
        "Memory Size: 128 MB\tMax Memory Used: 45 MB\tInit Duration: 123.46 ms\t"
        "Status: timeout"
    )


def test_report_line_flags_a_crash_with_its_error_type() -> None:
    report = Report.build(
        "abc",
        duration_ms=1.0,
        memory_size_mb=256,
        max_memory_used_mb=30,
        init_duration_ms=None,
        status="crash",
        error_type="Runtime.ExitError",
    )

    assert report.line() == (
        "REPORT RequestId: abc\tDuration: 1.00 ms\tBilled Duration: 1 ms\t"
        "Memory Size: 256 MB\tMax Memory Used: 30 MB\tStatus: error\t"
        "Error Type: Runtime.ExitError"
    )


def test_emulator_address_needs_start() -> None:
    emu = Emulator(["true"])

    with pytest.raises(RuntimeError, match="await start"):
        _ = emu.url
    with pytest.raises(RuntimeError, match="await start"):
        _ = emu.runtime_api


def test_emulator_rejects_a_bad_function_name() -> None:
    with pytest.raises(ValueError, match="function_name 'a b' must be 1-64"):
        Emulator(["true"], function_name="a b")
