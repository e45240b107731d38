"""Fidelity proof: the official ``awslambdaric`` runs unchanged on the emulator.

Every handler here is a plain awslambdaric handler module written into
``tmp_path``; the runtime is started exactly as a container image would start
it, ``python -m awslambdaric app.handler``.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from statefulrt.emulator import Emulator

pytest.importorskip("awslambdaric", reason="the fidelity tests need awslambdaric")

HANDLERS = """
import os
import time


def echo(event, context):
    return event


def describe(event, context):
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "custom": context.client_context.custom if context.client_context else None,
        "tenant_id": context.tenant_id,
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def fail(event, context):
    raise ValueError("the handler failed: " + event["why"])


def slow(event, context):
    time.sleep(event.get("sleep", 0))
    return {"slept": event.get("sleep", 0)}


def crash(event, context):
    os._exit(3)


def huge(event, context):
    return "x" * 7_000_000
"""

BROKEN_INIT = """
raise RuntimeError("cannot load the model")


def handler(event, context):
    return "unreachable"
"""


@asynccontextmanager
async def awslambdaric(
    tmp_path: Path, handler: str, source: str = HANDLERS, **options: Any
) -> AsyncIterator[Emulator]:
    (tmp_path / "app.py").write_text(source)
    options.setdefault("report_stream", None)
    command = [sys.executable, "-m", "awslambdaric", f"app.{handler}"]
    async with Emulator(command, cwd=tmp_path, **options) as emu:
        yield emu


@pytest.mark.asyncio
async def test_awslambdaric_returns_the_handler_result(tmp_path: Path) -> None:
    async with awslambdaric(tmp_path, "echo") as emu:
        result = await emu.invoke({"photo": "s3://bucket/1.jpg", "n": [1, 2]})

    assert result.status == 200
    assert result.function_error is None
    assert result.json() == {"photo": "s3://bucket/1.jpg", "n": [1, 2]}
    assert re.fullmatch(r"[0-9a-f-]{36}", result.request_id)


@pytest.mark.asyncio
async def test_awslambdaric_context_carries_the_invoke_headers(
    tmp_path: Path,
) -> None:
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    options: dict[str, Any] = {"function_name": "describe-fn", "memory_mb": 512}
    async with awslambdaric(tmp_path, "describe", timeout=2, **options) as emu:
        result = await emu.invoke(
            {},
            client_context={"custom": {"user": "ada"}},
            tenant_id="tenant-42",
            trace_id=trace,
        )

    context = result.json()
    remaining = context.pop("remaining_ms")
    assert 0 < remaining <= 2000
    assert context == {
        "request_id": result.request_id,
        "function_name": "describe-fn",
        "function_version": "$LATEST",
        "memory_limit_in_mb": "512",
        "invoked_function_arn": (
            "arn:aws:lambda:us-east-1:012345678912:function:describe-fn"
        ),
        "log_group_name": "/aws/lambda/describe-fn",
        "custom": {"user": "ada"},
        "tenant_id": "tenant-42",
        "trace_id": trace,
    }


@pytest.mark.asyncio
async def test_awslambdaric_handler_error_reaches_the_caller(tmp_path: Path) -> None:
    async with awslambdaric(tmp_path, "fail") as emu:
        result = await emu.invoke({"why": "no disk"})

    assert result.status == 200
    assert result.function_error == "Unhandled"
    error = result.json()
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "the handler failed: no disk"
    assert error["requestId"] == result.request_id
    assert any("app.py" in frame for frame in error["stackTrace"])


@pytest.mark.asyncio
async def test_awslambdaric_reports_a_non_json_event(tmp_path: Path) -> None:
    async with awslambdaric(tmp_path, "echo") as emu:
        result = await emu.invoke(b"this is not json")

    assert result.function_error == "Unhandled"
    error = result.json()
    assert error["errorType"] == "Runtime.UnmarshalError"
    assert error["errorMessage"].startswith("Unable to unmarshal input: Expecting")


@pytest.mark.asyncio
async def test_awslambdaric_oversized_response_fails_then_recovers(
    tmp_path: Path,
) -> None:
    async with awslambdaric(tmp_path, "huge") as emu:
        result = await emu.invoke({})
        await emu.wait_idle()

    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": "Response payload size exceeded maximum allowed payload "
        "size (6291556 bytes).",
    }
    # awslambdaric treats the 413 as fatal and exits; that is a crash.
    assert emu.reports[0].status == "crash"


@pytest.mark.asyncio
async def test_awslambdaric_oversized_event_is_refused(tmp_path: Path) -> None:
    async with awslambdaric(tmp_path, "echo") as emu:
        refused = await emu.invoke(b'"' + b"x" * 6291556 + b'"')
        accepted = await emu.invoke(b'"' + b"x" * 6291554 + b'"')

    assert refused.status == 413
    assert refused.json()["errorType"] == "RequestTooLargeException"
    assert accepted.status == 200
    assert len(accepted.payload) == 6291556
    assert emu.starts == 1


@pytest.mark.asyncio
async def test_awslambdaric_timeout_then_recovery(tmp_path: Path) -> None:
    async with awslambdaric(tmp_path, "slow", timeout=1) as emu:
        timed_out = await emu.invoke({"sleep": 10})
        second = await emu.invoke({"sleep": 0})
        await emu.wait_idle()

    assert timed_out.function_error == "Unhandled"
    assert timed_out.json() == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {timed_out.request_id} Error: Task timed out "
        "after 1.00 seconds",
    }
    assert second.json() == {"slept": 0}
    assert emu.starts == 2
    first_report, second_report = emu.reports
    assert first_report.status == "timeout"
    assert first_report.duration_ms == 1000.0
    assert first_report.init_duration_ms is not None
    assert second_report.status == "success"
    assert second_report.init_duration_ms is not None


@pytest.mark.asyncio
async def test_awslambdaric_crash_is_reported_promptly(tmp_path: Path) -> None:
    async with awslambdaric(tmp_path, "crash", timeout=30) as emu:
        started = time.monotonic()
        result = await emu.invoke({})
        elapsed = time.monotonic() - started
        await emu.wait_idle()

    assert elapsed < 10
    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {result.request_id} Error: Runtime exited "
        "with error: exit status 3",
    }
    assert emu.pid is None
    assert (emu.reports[0].status, emu.reports[0].error_type) == (
        "crash",
        "Runtime.ExitError",
    )


@pytest.mark.asyncio
async def test_awslambdaric_init_error_on_every_cold_start(tmp_path: Path) -> None:
    async with awslambdaric(tmp_path, "handler", BROKEN_INIT, timeout=30) as emu:
        started = time.monotonic()
        first = await emu.invoke({})
        elapsed = time.monotonic() - started
        await emu.wait_idle()
        second = await emu.invoke({})
        await emu.wait_idle()

    assert elapsed < 10
    for result in (first, second):
        assert result.function_error == "Unhandled"
        error = result.json()
        assert (error["errorType"], error["errorMessage"]) == (
            "RuntimeError",
            "cannot load the model",
        )
        assert error["requestId"] == ""
    assert emu.starts == 2
    # RAPID reports a non-"Runtime."/"Function." error type as Runtime.Unknown.
    assert [(r.status, r.error_type) for r in emu.reports] == [
        ("error", "Runtime.Unknown"),
        ("error", "Runtime.Unknown"),
    ]


@pytest.mark.asyncio
async def test_awslambdaric_missing_handler_is_an_init_error(tmp_path: Path) -> None:
    async with awslambdaric(tmp_path, "nope") as emu:
        result = await emu.invoke({})
        await emu.wait_idle()

    assert result.json()["errorType"] == "Runtime.HandlerNotFound"
    assert result.json()["errorMessage"] == "Handler 'nope' missing on module 'app'"
    assert emu.reports[0].error_type == "Runtime.HandlerNotFound"


@pytest.mark.asyncio
async def test_awslambdaric_hundred_concurrent_invokes_get_their_own_results(
    tmp_path: Path,
) -> None:
    async with awslambdaric(tmp_path, "echo") as emu:
        results = await asyncio.gather(
            *(emu.invoke({"caller": n, "pad": "p" * n}) for n in range(100))
        )
        await emu.wait_idle()

    assert [result.json() for result in results] == [
        {"caller": n, "pad": "p" * n} for n in range(100)
    ]
    assert all(result.function_error is None for result in results)
    assert len({result.request_id for result in results}) == 100
    assert len(emu.reports) == 100
    assert emu.starts == 1


@pytest.mark.asyncio
async def test_awslambdaric_report_lines_match_lambda(tmp_path: Path) -> None:
    stream = io.StringIO()
    async with awslambdaric(
        tmp_path, "slow", timeout=1, memory_mb=256, report_stream=stream
    ) as emu:
        cold = await emu.invoke({})
        warm = await emu.invoke({})
        timed_out = await emu.invoke({"sleep": 10})
        await emu.wait_idle()

    number = r"\d+\.\d\d"
    report = (
        r"REPORT RequestId: {id}\tDuration: ({n}) ms\tBilled Duration: (\d+) ms\t"
        r"Memory Size: 256 MB\tMax Memory Used: (\d+) MB"
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 9
    for offset, (result, suffix) in enumerate(
        [
            (cold, rf"\tInit Duration: {number} ms"),
            (warm, ""),
            (timed_out, r"\tStatus: timeout"),
        ]
    ):
        start, end, line = lines[offset * 3 : offset * 3 + 3]
        assert start == f"START RequestId: {result.request_id} Version: $LATEST"
        assert end == f"END RequestId: {result.request_id}"
        pattern = report.format(id=result.request_id, n=number) + suffix
        match = re.fullmatch(pattern, line)
        assert match is not None, line
        duration, billed, memory = match.groups()
        assert int(billed) == -(-float(duration) // 1)
        assert 1 <= int(memory) <= 256

    assert re.search(r"\tDuration: 1000\.00 ms\tBilled Duration: 1000 ms\t", lines[8])
