"""statefulrt's runtime as a real process under the emulator, over real HTTP.

Every behaviour of the runtime loop and every bad input, end to end: the event
goes through the invoke endpoint, the runtime long-polls the Runtime API, and
the answer comes back to the caller.
"""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from statefulrt.emulator import Emulator

APP = """
import asyncio, os, time
from statefulrt import StatefulHandler, FlushPolicy, flush_hook

def echo(event, context):
    cc = context.client_context
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "cold": context.is_cold,
        "index": context.invocation_index,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 2000,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "tenant": context.tenant_id,
        "custom": cc.custom if cc else None,
        "pid": os.getpid(),
    }

HEAVY = ("aiohttp", "argparse", "statefulrt.emulator", "statefulrt._journal",
         "statefulrt_timelapse", "statefulrt_sinks", "tempfile", "decimal", "av",
         "numpy")

def loaded_heavy(event, context):
    import sys
    return [name for name in HEAVY if name in sys.modules]

async def async_echo(event, context):
    await asyncio.sleep(0.001)
    return {"async": event}

class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no")

class Fatal(BaseException):
    pass

def fail(event, context):
    kind = event["kind"]
    if kind == "unicode":
        raise ValueError("café ☕ 東京")
    if kind == "badstr":
        raise BadStr()
    if kind == "chained":
        try:
            int("x")
        except ValueError as exc:
            raise LookupError("wrapped") from exc
    if kind == "exit":
        raise SystemExit(4)
    if kind == "interrupt":
        raise KeyboardInterrupt()
    if kind == "fatal":
        raise Fatal("deep")
    if kind == "big":
        return "x" * event["size"]
    if kind == "set":
        return {1, 2}
    if kind == "sleep":
        time.sleep(event["seconds"])
        return "slept"
    if kind == "crash":
        os._exit(3)
    return {"ok": os.getpid()}

class Buffered(StatefulHandler):
    flush_policy = FlushPolicy(every=2)

    async def init(self):
        self.out = os.environ["FLUSH_FILE"]

    async def handle(self, event, context):
        self.state.buffer("events").append(event["n"])
        return {"pending": len(self.state.buffer("events"))}

    async def flush(self, batch):
        with open(self.out, "a") as out:
            out.write(f"{batch.name}:{batch.items('events')}\\n")

    @flush_hook
    async def after(self, batch):
        with open(self.out, "a") as out:
            out.write(f"hook:{batch.epoch}\\n")
"""

Start = Callable[..., Any]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "broken_import.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "broken_syntax.py").write_text("def handler(e, c)\n    pass\n")
    (tmp_path / "broken_raise.py").write_text("raise KeyError('BUCKET')\n")
    return tmp_path


@asynccontextmanager
async def emulator(
    app_dir: Path,
    handler: str,
    *,
    timeout: float = 2.0,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> AsyncIterator[Emulator]:
    argv = command or [sys.executable, "-m", "statefulrt", handler]
    emu = Emulator(
        argv,
        cwd=app_dir,
        timeout=timeout,
        memory_mb=256,
        function_name="it",
        env=env,
        report_stream=None,
    )
    async with emu:
        yield emu


async def test_integration_cold_then_warm_with_context(app_dir: Path) -> None:
    async with emulator(app_dir, "app.echo") as emu:
        first = await emu.invoke({"a": 1}, client_context={"custom": {"k": "v"}})
        second = await emu.invoke({"a": 2}, tenant_id="tenant-9")
        await emu.wait_idle()
        reports = emu.reports

    one, two = first.json(), second.json()
    assert (first.status, first.function_error) == (200, None)
    assert one["event"] == {"a": 1}
    assert one["request_id"] == first.request_id
    assert (one["cold"], one["index"], two["cold"], two["index"]) == (True, 1, False, 2)
    assert (one["function_name"], one["memory"]) == ("it", "256")
    assert one["arn"] == "arn:aws:lambda:us-east-1:012345678912:function:it"
    assert one["remaining_ok"] is True
    assert one["custom"] == {"k": "v"}
    assert one["trace"].startswith("Root=1-")
    assert two["tenant"] == "tenant-9"
    assert one["pid"] == two["pid"]
    assert reports[0].init_duration_ms is not None
    assert reports[1].init_duration_ms is None


async def test_integration_runtime_path_imports_nothing_heavy(app_dir: Path) -> None:
    async with emulator(app_dir, "app.loaded_heavy") as emu:
        result = await emu.invoke({})
    assert result.json() == []


async def test_integration_async_handler_and_module_entry(app_dir: Path) -> None:
    command = [sys.executable, "-m", "statefulrt", "run", "app.async_echo"]
    async with emulator(app_dir, "app.async_echo", command=command) as emu:
        result = await emu.invoke([1, "two"])
    assert result.json() == {"async": [1, "two"]}


@pytest.mark.parametrize(
    ("kind", "error_type", "message"),
    [
        ("unicode", "ValueError", "café ☕ 東京"),
        ("badstr", "BadStr", "<str() of BadStr raised RuntimeError>"),
        ("chained", "LookupError", "wrapped"),
        ("exit", "SystemExit", "4"),
        ("interrupt", "KeyboardInterrupt", ""),
        ("fatal", "Fatal", "deep"),
        (
            "set",
            "Runtime.MarshalError",
            "Unable to marshal response: Type is not JSON serializable: set",
        ),
    ],
)
async def test_integration_errors_answer_and_process_survives(
    app_dir: Path, kind: str, error_type: str, message: str
) -> None:
    async with emulator(app_dir, "app.fail") as emu:
        bad = await emu.invoke({"kind": kind})
        good = await emu.invoke({"kind": "none"})
        starts = emu.starts

    body = bad.json()
    assert (bad.status, bad.function_error) == (200, "Unhandled")
    assert (body["errorType"], body["errorMessage"]) == (error_type, message)
    assert body["requestId"] == bad.request_id
    assert good.function_error is None
    assert starts == 1  # the same process answered both


async def test_integration_chained_error_stack_trace(app_dir: Path) -> None:
    async with emulator(app_dir, "app.fail") as emu:
        body = (await emu.invoke({"kind": "chained"})).json()
    trace = "".join(body["stackTrace"])
    assert "ValueError: invalid literal for int() with base 10: 'x'" in trace
    assert "The above exception was the direct cause" in trace
    assert 'app.py", line' in trace
    assert "statefulrt/_runtime.py" not in trace


async def test_integration_event_not_json(app_dir: Path) -> None:
    async with emulator(app_dir, "app.echo") as emu:
        bad = await emu.invoke(b"\xff{definitely not json")
        good = await emu.invoke({"x": 1})
    body = bad.json()
    assert body["errorType"] == "Runtime.UnmarshalError"
    assert body["errorMessage"].startswith("Unable to unmarshal input: ")
    assert good.json()["event"] == {"x": 1}


async def test_integration_response_over_6mb(app_dir: Path) -> None:
    async with emulator(app_dir, "app.fail") as emu:
        big = await emu.invoke({"kind": "big", "size": 6 * 1024 * 1024 + 200})
        small = await emu.invoke({"kind": "big", "size": 3})
        starts = emu.starts
    assert big.json() == {
        "errorMessage": "Response payload size (6291658 bytes) exceeded maximum "
        "allowed payload size (6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
        "requestId": big.request_id,
        "stackTrace": [],
    }
    assert small.json() == "xxx"
    assert starts == 1


async def test_integration_timeout_then_cold_restart(app_dir: Path) -> None:
    async with emulator(app_dir, "app.fail", timeout=1.0) as emu:
        slow = await emu.invoke({"kind": "sleep", "seconds": 5})
        after = await emu.invoke({"kind": "none"})
        await emu.wait_idle()
        starts, reports = emu.starts, emu.reports
    assert slow.json() == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {slow.request_id} Error: Task timed out after "
        "1.00 seconds",
    }
    assert after.function_error is None
    assert starts == 2
    assert reports[-1].init_duration_ms is not None  # cold again


async def test_integration_crash_is_reported_promptly(app_dir: Path) -> None:
    async with emulator(app_dir, "app.fail", timeout=10.0) as emu:
        started = time.monotonic()
        crash = await emu.invoke({"kind": "crash"})
        elapsed = time.monotonic() - started
        after = await emu.invoke({"kind": "none"})
    assert crash.json()["errorType"] == "Runtime.ExitError"
    assert crash.json()["errorMessage"] == (
        f"RequestId: {crash.request_id} Error: Runtime exited with error: exit status 3"
    )
    assert elapsed < 5.0  # far below the 10 s timeout
    assert after.function_error is None


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        (
            "app.nothing_here",
            "Runtime.HandlerNotFound",
            "Handler 'nothing_here' missing on module 'app'",
        ),
        (
            "nodots",
            "Runtime.MalformedHandlerName",
            "Bad handler 'nodots': expected 'module.function', "
            "for example 'app.handler'",
        ),
        (
            "broken_import.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'broken_import': "
            "No module named 'no_such_dependency_xyz'",
        ),
        (
            "missing_module.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'missing_module': "
            "No module named 'missing_module'",
        ),
        ("broken_raise.handler", "KeyError", "'BUCKET'"),
    ],
)
async def test_integration_init_errors_reach_the_caller(
    app_dir: Path, handler: str, error_type: str, message: str
) -> None:
    async with emulator(app_dir, handler) as emu:
        first = await emu.invoke({})
        again = await emu.invoke({})
        starts = emu.starts
    for result in (first, again):
        body = result.json()
        assert result.function_error == "Unhandled"
        assert (body["errorType"], body["errorMessage"]) == (error_type, message)
    assert starts == 2  # each invoke re-ran init


async def test_integration_syntax_error_is_reported(app_dir: Path) -> None:
    async with emulator(app_dir, "broken_syntax.handler") as emu:
        body = (await emu.invoke({})).json()
    assert body["errorType"] == "Runtime.UserCodeSyntaxError"
    assert body["errorMessage"].startswith("Syntax error in module 'broken_syntax': ")


async def test_integration_stateful_flush_after_response(
    app_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "flushed.txt"
    async with emulator(app_dir, "app.Buffered", env={"FLUSH_FILE": str(out)}) as emu:
        answers = [(await emu.invoke({"n": n})).json() for n in range(1, 6)]
        await emu.wait_idle()
        flushed = out.read_text().splitlines()
    assert answers == [{"pending": p} for p in (1, 2, 1, 2, 1)]
    assert [re.sub(r"-[0-9a-f]{8}:", ":", line) for line in flushed] == [
        "0000000001:[1, 2]",
        "hook:1",
        "0000000002:[3, 4]",
        "hook:2",
    ]
    # both flushes name the same writer, so the names are unique per sandbox
    assert len({line.split(":")[0][11:] for line in flushed[::2]}) == 1


async def test_integration_concurrent_invokes_each_get_their_own(
    app_dir: Path,
) -> None:
    async with emulator(app_dir, "app.echo") as emu:
        results = await asyncio.gather(*(emu.invoke({"n": n}) for n in range(30)))
    assert [r.json()["event"]["n"] for r in results] == list(range(30))
    assert len({r.request_id for r in results}) == 30


def test_integration_report_lines_format(app_dir: Path) -> None:
    import subprocess

    script = textwrap.dedent(
        """
        import asyncio, sys
        from statefulrt.emulator import Emulator
        async def main():
            emu = Emulator([sys.executable, "-m", "statefulrt", "app.echo"],
                           cwd=sys.argv[1], timeout=2, memory_mb=256,
                           report_stream=sys.stdout)
            async with emu:
                await emu.invoke({})
                await emu.invoke({})
                await emu.wait_idle()
        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(app_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    reports = [line for line in out.splitlines() if line.startswith("REPORT")]
    assert len(reports) == 2
    pattern = (
        r"REPORT RequestId: [0-9a-f-]{36}\tDuration: \d+\.\d{2} ms\t"
        r"Billed Duration: \d+ ms\tMemory Size: 256 MB\tMax Memory Used: \d+ MB"
    )
    assert re.fullmatch(pattern + r"\tInit Duration: \d+\.\d{2} ms", reports[0])
    assert re.fullmatch(pattern, reports[1])
    assert len([line for line in out.splitlines() if line.startswith("START")]) == 2
