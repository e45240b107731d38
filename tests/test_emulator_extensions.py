"""The emulator's Extensions API, shutdown phase, freezing and testing controls.

Where exact responses are under test the test plays the runtime and the
extensions over HTTP; where the lifecycle is under test small fake runtimes and
fake external extensions (Python scripts written into ``tmp_path``) do, and one
test runs statefulrt's own runtime to prove its SIGTERM flush end to end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from statefulrt.emulator import Emulator, InvokeResult
from statefulrt.emulator._supervisor import SandboxProcess

ARN = "arn:aws:lambda:us-east-1:012345678912:function:function"
TRACE = "Root=1-00000000-000000000000000000000001;Parent=0000000000000001;Sampled=1"

# A runtime that never polls: the test drives the APIs itself.
SLEEPER = "import time\ntime.sleep(60)\n"

# A minimal runtime; RT_MODE adds an internal extension, a ticking thread, or
# a SIGTERM handler that ignores the signal.
RUNTIME = r"""
import http.client, json, os, signal, sys, threading, time

host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
mode = os.environ.get("RT_MODE", "").split(",")

def order(line):
    path = os.environ.get("ORDER_LOG")
    if path:
        with open(path, "a") as file:
            file.write(f"{line} {time.time()}\n")

def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(host, int(port))
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response, response.read()

def on_term(signum, frame):
    order("runtime-SIGTERM")
    if "ignore-term" not in mode:
        sys.exit(0)

signal.signal(signal.SIGTERM, on_term)

def in_background(target, *args):
    # SIGTERM must reach the main thread, blocked in a read, to interrupt it.
    def run():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        target(*args)
    threading.Thread(target=run, daemon=True).start()

if "internal" in mode:
    response, _ = call(
        "POST", "/2020-01-01/extension/register", b'{"events": []}',
        {"Lambda-Extension-Name": "internal-ext"},
    )
    headers = {"Lambda-Extension-Identifier":
               response.getheader("Lambda-Extension-Identifier")}
    in_background(call, "GET", "/2020-01-01/extension/event/next", None, headers)

if "ticker" in mode:
    def tick():
        while True:
            with open(os.environ["TICK_FILE"], "a") as file:
                file.write(f"{time.time()}\n")
            time.sleep(0.05)
    in_background(tick)

while True:
    response, body = call("GET", "/2018-06-01/runtime/invocation/next")
    request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(body)
    if "write" in event:
        with open(os.path.join(os.environ["TMPDIR"], event["write"]), "w") as file:
            file.write("kept")
    time.sleep(event.get("sleep", 0))
    if "exit" in event:
        os._exit(event["exit"])
    answer = {"echo": event, "tmpdir": os.environ.get("TMPDIR")}
    call("POST", f"/2018-06-01/runtime/invocation/{request_id}/response",
         json.dumps(answer))
"""

# An external extension; its events and behaviour are filled in per file.
EXTENSION = r"""#!__PYTHON__
import http.client, json, os, signal, sys, time

EVENTS = __EVENTS__
BEHAVIOUR = __BEHAVIOUR__
name = os.path.basename(sys.argv[0])
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)

def record(kind, value=None):
    path = os.path.join(os.environ["EXT_LOG_DIR"], name + ".jsonl")
    with open(path, "a") as file:
        file.write(json.dumps({"kind": kind, "value": value}) + "\n")

def order(line):
    path = os.environ.get("ORDER_LOG")
    if path:
        with open(path, "a") as file:
            file.write(f"{line} {time.time()}\n")

def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(host, int(port))
    connection.request(
        method, "/2020-01-01/extension" + path, body=body, headers=headers or {}
    )
    response = connection.getresponse()
    return response, response.read()

record("start", {"pid": os.getpid(), "env": dict(os.environ), "cwd": os.getcwd()})
if BEHAVIOUR == "exit-early":
    sys.exit(4)
if BEHAVIOUR == "never-register":
    time.sleep(60)
response, body = call(
    "POST", "/register", json.dumps({"events": EVENTS}),
    {"Lambda-Extension-Name": name},
)
headers = {"Lambda-Extension-Identifier":
           response.getheader("Lambda-Extension-Identifier")}
while True:
    response, body = call("GET", "/event/next", headers=headers)
    if response.status != 200:
        sys.exit(1)
    event = json.loads(body)
    record("event", event)
    if event["eventType"] == "INVOKE" and BEHAVIOUR == "crash-on-invoke":
        os._exit(5)
    if event["eventType"] == "SHUTDOWN":
        order("extension-SHUTDOWN")
        if BEHAVIOUR == "ignore-shutdown":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(60)
        record("exit")
        sys.exit(0)
"""


def go_json(value: object) -> bytes:
    return orjson.dumps(value) + b"\n"


def rapid_error(error_type: str, message: str) -> bytes:
    return go_json({"errorMessage": message, "errorType": error_type})


def transition(current: str, target: str, who: str) -> bytes:
    message = (
        f"State transition from {current} to {target} failed for extension {who}. "
        "Error: State transition is not allowed"
    )
    return rapid_error("Extension.InvalidExtensionState", message)


def write_extension(
    directory: Path,
    name: str,
    events: tuple[str, ...] = ("INVOKE", "SHUTDOWN"),
    behaviour: str = "",
) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    script = (
        EXTENSION.replace("__PYTHON__", sys.executable)
        .replace("__EVENTS__", repr(list(events)))
        .replace("__BEHAVIOUR__", repr(behaviour))
    )
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def extension_log(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / "ext-logs" / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def order_log(tmp_path: Path) -> list[tuple[str, float]]:
    lines = (tmp_path / "order.log").read_text().split()
    return [(lines[i], float(lines[i + 1])) for i in range(0, len(lines), 2)]


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaper counts)."""
    try:
        with open(f"/proc/{pid}/stat") as status:
            return status.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold in time")


async def bounded(task: asyncio.Task[Any]) -> Any:
    async with asyncio.timeout(10):
        return await task


@asynccontextmanager
async def emulator(
    tmp_path: Path, script: str, **options: Any
) -> AsyncIterator[Emulator]:
    (tmp_path / "runtime.py").write_text(script)
    (tmp_path / "ext-logs").mkdir(exist_ok=True)
    env = {"EXT_LOG_DIR": str(tmp_path / "ext-logs")}
    env.update(options.pop("env", {}))
    options.setdefault("report_stream", None)
    command = [sys.executable, "runtime.py"]
    async with Emulator(command, cwd=tmp_path, env=env, **options) as emu:
        yield emu


class Client:
    """The test playing the runtime and its extensions over HTTP."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self._session = session
        self._base = f"http://{emu.runtime_api}"

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(10):
            async with self._session.request(
                method, self._base + path, data=body, headers=headers or {}
            ) as response:
                return response.status, dict(response.headers), await response.read()

    async def register(
        self, name: str, body: bytes = b'{"events": []}', features: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Lambda-Extension-Name": name}
        if features:
            headers["Lambda-Extension-Accept-Feature"] = features
        return await self.request(
            "POST", "/2020-01-01/extension/register", body, headers
        )

    async def event_next(
        self, identifier: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = (
            {} if identifier is None else {"Lambda-Extension-Identifier": identifier}
        )
        return await self.request(
            "GET", "/2020-01-01/extension/event/next", headers=headers
        )

    async def report(
        self, kind: str, identifier: str | None, error_type: str | None
    ) -> tuple[int, bytes]:
        headers = {}
        if identifier is not None:
            headers["Lambda-Extension-Identifier"] = identifier
        if error_type is not None:
            headers["Lambda-Extension-Function-Error-Type"] = error_type
        status, _, body = await self.request(
            "POST", f"/2020-01-01/extension/{kind}/error", b"", headers
        )
        return status, body

    async def runtime_next(self) -> tuple[int, dict[str, str], bytes]:
        return await self.request("GET", "/2018-06-01/runtime/invocation/next")

    async def respond(self, request_id: str, body: bytes) -> int:
        path = f"/2018-06-01/runtime/invocation/{request_id}/response"
        status, _, _ = await self.request("POST", path, body)
        return status


@asynccontextmanager
async def client(emu: Emulator) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, emu)


async def settle(*tasks: asyncio.Task[Any]) -> None:
    """Let polls the emulator answered at shutdown end, whatever they got."""
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the Extensions API, exactly ------------------------------------------------


async def test_register_answers_and_refuses_like_rapid(tmp_path: Path) -> None:
    options: dict[str, Any] = {"function_name": "fn-x", "handler": "app.h"}
    async with emulator(tmp_path, SLEEPER, **options) as emu, client(emu) as api:
        invoke = asyncio.create_task(emu.invoke({}))
        await until(lambda: emu.pid is not None)

        status, headers, body = await api.register(
            "ext-a", b'{"events": ["INVOKE"]}', features="accountId"
        )
        assert status == 200
        assert uuid.UUID(headers["Lambda-Extension-Identifier"]).version == 4
        assert headers["Content-Type"] == "application/json"
        assert body == (
            b'{"accountId":"012345678912","functionName":"fn-x",'
            b'"functionVersion":"$LATEST","handler":"app.h"}\n'
        )
        status, _, body = await api.register("ext-b", b"{}")
        assert (status, body) == (
            200,
            b'{"functionName":"fn-x","functionVersion":"$LATEST","handler":"app.h"}\n',
        )

        refused = [
            ("", b"{}", "Extension.InvalidExtensionName", "Empty extension name"),
            ("x", b"", "InvalidRequestFormat", "unexpected end of JSON input"),
            (
                "x",
                b'{"configurationKeys": ["K"]}',
                "InvalidRequestFormat",
                "configurationKeys are deprecated; use environment variables instead",
            ),
            (
                "x",
                b'{"events": ["SHUTDOWN"]}',
                "Extension.InvalidEventType",
                "SHUTDOWN: ShutdownEventNotSupportedForInternalExtension",
            ),
            (
                "x",
                b'{"events": ["INVOKE", "BOOT"]}',
                "Extension.InvalidEventType",
                "BOOT: ErrorInvalidEventType",
            ),
            (
                "ext-a",
                b"{}",
                "Extension.InvalidExtensionState",
                "Extension with this name already registered",
            ),
        ]
        for name, request, error_type, message in refused:
            status, headers, body = await api.register(name, request)
            assert (status, body) == (403, rapid_error(error_type, message)), name
            assert headers["Content-Type"] == "application/json"

        for n in range(8):
            assert (await api.register(f"ext-{n}"))[0] == 200
        status, _, body = await api.register("one-too-many")
        assert (status, body) == (
            403,
            rapid_error("Extension.TooManyExtensions", "Extension limit (10) reached"),
        )

        # The runtime's first /next closes registration.
        runtime = asyncio.create_task(api.runtime_next())
        closed = rapid_error(
            "Extension.RegistrationClosed", "Extension registration closed already"
        )
        for _ in range(500):
            status, _, body = await api.register("late")
            if body == closed:
                break
            await asyncio.sleep(0.01)
        assert (status, body) == (403, closed)

    await settle(invoke, runtime)


async def test_extension_identity_errors_match_rapid(tmp_path: Path) -> None:
    unknown = str(uuid.uuid4())
    async with emulator(tmp_path, SLEEPER) as emu, client(emu) as api:
        missing = rapid_error(
            "Extension.MissingExtensionIdentifier",
            "Missing Lambda-Extension-Identifier header",
        )
        invalid = rapid_error(
            "Extension.InvalidExtensionIdentifier",
            "Invalid Lambda-Extension-Identifier",
        )
        status, _, body = await api.event_next(None)
        assert (status, body) == (403, missing)
        status, _, body = await api.event_next("not-a-uuid")
        assert (status, body) == (403, invalid)
        status, _, body = await api.event_next(unknown)
        assert (status, body) == (
            403,
            rapid_error(
                "Extension.UnknownExtensionIdentifier", f"Unknown extension {unknown}"
            ),
        )

        for kind in ("init", "exit"):
            assert await api.report(kind, None, "Extension.X") == (403, missing)
            assert await api.report(kind, "nope", "Extension.X") == (403, invalid)
            assert await api.report(kind, unknown, None) == (
                403,
                rapid_error(
                    "Extension.MissingHeader",
                    "Lambda-Extension-Function-Error-Type not found",
                ),
            )
            assert await api.report(kind, unknown, "Extension.X") == (
                403,
                rapid_error(
                    "Extension.UnknownExtensionIdentifier",
                    "Unknown Lambda-Extension-Identifier",
                ),
            )

        # No environment exists before the first invoke: nothing registers.
        status, _, body = await api.register("early")
        assert (status, body) == (
            403,
            rapid_error(
                "Extension.RegistrationClosed", "Extension registration closed already"
            ),
        )


async def test_invoke_ends_when_runtime_and_invoke_extensions_poll_again(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, SLEEPER) as emu, client(emu) as api:
        invoke = asyncio.create_task(emu.invoke({"k": 1}, trace_id=TRACE))
        await until(lambda: emu.pid is not None)
        _, headers, _ = await api.register("watcher", b'{"events": ["INVOKE"]}')
        identifier = headers["Lambda-Extension-Identifier"]

        # Init ends only once the extension asks for its first event too.
        runtime = asyncio.create_task(api.runtime_next())
        await asyncio.sleep(0.2)
        assert not runtime.done()
        first = asyncio.create_task(api.event_next(identifier))
        _, runtime_headers, _ = await bounded(runtime)
        request_id = runtime_headers["Lambda-Runtime-Aws-Request-Id"]
        deadline_ms = int(runtime_headers["Lambda-Runtime-Deadline-Ms"])

        status, headers, event = await bounded(first)
        assert status == 200
        assert event == go_json(
            {
                "eventType": "INVOKE",
                "deadlineMs": deadline_ms,
                "requestId": request_id,
                "invokedFunctionArn": ARN,
                "tracing": {"type": "X-Amzn-Trace-Id", "value": TRACE},
            }
        )
        assert uuid.UUID(headers["Lambda-Extension-Event-Identifier"]).version == 4
        assert headers["Content-Type"] == "application/json"

        # The caller is answered at once; the invocation ends later.
        assert await api.respond(request_id, b'{"ok": true}') == 202
        result = await bounded(invoke)
        assert result == InvokeResult(200, b'{"ok": true}', None, request_id)
        runtime_again = asyncio.create_task(api.runtime_next())
        idle = asyncio.create_task(emu.wait_idle())
        await asyncio.sleep(0.2)
        assert not idle.done()
        extension_again = asyncio.create_task(api.event_next(identifier))
        await bounded(idle)
        assert [report.status for report in emu.reports] == ["success"]

        # Waiting already: a second poll and a late init error are refused.
        assert not extension_again.done()
        status, _, body = await api.event_next(identifier)
        assert (status, body) == (403, transition("Ready", "Ready", identifier))
        assert await api.report("init", identifier, "Extension.Late") == (
            403,
            transition("Ready", "InitError", identifier),
        )

        # exit/error is accepted (twice) and resets the idle environment.
        ok = (202, b'{"status":"OK"}\n')
        assert await api.report("exit", identifier, "Extension.Bye") == ok
        assert await api.report("exit", identifier, "Extension.Bye") == ok
        await until(lambda: emu.shutdowns != [])
        assert emu.shutdowns == [("failure", "SIGTERM", -15)]

    await settle(runtime_again, extension_again)
    assert (await runtime_again)[0] == 500
    assert (await extension_again)[0] == 500


async def test_extension_init_error_fails_the_invoke(tmp_path: Path) -> None:
    async with emulator(tmp_path, SLEEPER) as emu, client(emu) as api:
        invoke = asyncio.create_task(emu.invoke({}))
        await until(lambda: emu.pid is not None)
        _, headers, _ = await api.register("ext-a")
        identifier = headers["Lambda-Extension-Identifier"]

        reported = await api.report("init", identifier, "Extension.NoConfig")
        result = await bounded(invoke)
        await emu.wait_idle()

    assert reported == (202, b'{"status":"OK"}\n')
    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Extension.InitError",
        "errorMessage": f"RequestId: {result.request_id} Error: Extension ext-a "
        "reported Extension.NoConfig",
    }
    [report] = emu.reports
    assert (report.status, report.error_type) == ("error", "Extension.InitError")
    assert report.init_duration_ms is not None
    assert emu.shutdowns[0] == ("failure", "SIGTERM", -15)


# -- external extensions ----------------------------------------------------------


async def test_external_extension_sees_invokes_and_shutdown(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "ext-one")
    (tmp_path / "extensions" / "README").write_text("not executable: not launched")
    options: dict[str, Any] = {
        "extensions_dir": tmp_path / "extensions",
        "handler": "runtime.handler",
        "env": {"ORDER_LOG": str(tmp_path / "order.log")},
    }
    async with emulator(tmp_path, RUNTIME, **options) as emu:
        first = await emu.invoke({"n": 1}, trace_id=TRACE)
        second = await emu.invoke({"n": 2})
        await emu.wait_idle()
        tmpdir = emu.tmpdir
        await emu.shutdown()
        shutdowns = list(emu.shutdowns)

    assert first.json() == {"echo": {"n": 1}, "tmpdir": tmpdir}
    assert second.json() == {"echo": {"n": 2}, "tmpdir": tmpdir}
    assert shutdowns == [("spindown", "SIGTERM", 0)]
    log = extension_log(tmp_path, "ext-one")
    assert [entry["kind"] for entry in log] == [
        "start",
        "event",
        "event",
        "event",
        "exit",
    ]
    started, invoke_1, invoke_2, shutdown, _ = log

    assert invoke_1["value"]["requestId"] == first.request_id
    assert invoke_1["value"]["tracing"] == {"type": "X-Amzn-Trace-Id", "value": TRACE}
    assert invoke_2["value"]["requestId"] == second.request_id
    assert invoke_2["value"]["invokedFunctionArn"] == ARN
    assert set(shutdown["value"]) == {"eventType", "deadlineMs", "shutdownReason"}
    assert shutdown["value"]["shutdownReason"] == "spindown"

    # The runtime got SIGTERM first, then the extension SHUTDOWN, with the
    # two seconds of the phase counted from the SIGTERM.
    (term, term_at), (event, event_at) = order_log(tmp_path)
    assert (term, event) == ("runtime-SIGTERM", "extension-SHUTDOWN")
    assert abs(shutdown["value"]["deadlineMs"] - (term_at * 1000 + 2000)) < 250

    # Extensions see the runtime's environment minus the runtime's own.
    env = started["value"]["env"]
    for name in ("_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_LOG_GROUP_NAME"):
        assert name not in env
    assert env["AWS_LAMBDA_RUNTIME_API"] == emu.runtime_api
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "function"
    assert env["TMPDIR"] == tmpdir
    assert started["value"]["cwd"] == str(tmp_path)
    assert tmpdir is not None and not os.path.exists(tmpdir)


async def test_shutdown_budget_gives_the_runtime_its_share(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "ext-one", events=("SHUTDOWN",))
    options: dict[str, Any] = {
        "extensions_dir": tmp_path / "extensions",
        "env": {"ORDER_LOG": str(tmp_path / "order.log"), "RT_MODE": "ignore-term"},
    }
    async with emulator(tmp_path, RUNTIME, **options) as emu:
        await emu.invoke({})
        await emu.shutdown()
        shutdowns = list(emu.shutdowns)

    # 300 ms of the 2,000 ms phase for a runtime with no internal extension.
    (_, term_at), (_, event_at) = order_log(tmp_path)
    assert 0.28 <= event_at - term_at <= 1.0
    assert shutdowns == [("spindown", "SIGTERM", -9)]
    *_, shutdown, exited = extension_log(tmp_path, "ext-one")
    assert shutdown["value"]["shutdownReason"] == "spindown"
    assert exited["kind"] == "exit"


async def test_extension_ignoring_shutdown_is_killed_at_the_deadline(
    tmp_path: Path,
) -> None:
    write_extension(tmp_path / "extensions", "stubborn", behaviour="ignore-shutdown")
    async with emulator(
        tmp_path, RUNTIME, extensions_dir=tmp_path / "extensions"
    ) as emu:
        await emu.invoke({})
        started = time.monotonic()
        await emu.shutdown(budget_ms=400)
        elapsed = time.monotonic() - started

    assert 0.35 <= elapsed < 2.0
    assert emu.shutdowns == [("spindown", "SIGTERM", 0)]
    pid = extension_log(tmp_path, "stubborn")[0]["value"]["pid"]
    assert process_gone(pid)


async def test_timeout_reset_sends_shutdown_and_keeps_tmpdir(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "ext-one")
    options: dict[str, Any] = {"extensions_dir": tmp_path / "extensions"}
    async with emulator(tmp_path, RUNTIME, timeout=0.5, **options) as emu:
        first = await emu.invoke({"write": "state.txt", "sleep": 3})
        await emu.wait_idle()
        after_reset = emu.tmpdir
        second = await emu.invoke({})
        await emu.wait_idle()
        starts = emu.starts

    assert first.json()["errorType"] == "Sandbox.Timedout"
    assert emu.shutdowns[0] == ("timeout", "SIGTERM", 0)
    assert second.json()["tmpdir"] == after_reset
    assert starts == 2
    assert after_reset is not None and not os.path.exists(after_reset)

    log = extension_log(tmp_path, "ext-one")
    events = [entry["value"] for entry in log if entry["kind"] == "event"]
    reasons = [e["shutdownReason"] for e in events if e["eventType"] == "SHUTDOWN"]
    assert reasons == ["timeout", "spindown"]
    assert [entry["kind"] for entry in log].count("start") == 2


async def test_reset_keeps_tmpdir_files(tmp_path: Path) -> None:
    async with emulator(tmp_path, RUNTIME, timeout=0.5) as emu:
        await emu.invoke({"write": "kept.txt"})
        await emu.kill()
        kept = Path(emu.tmpdir or "") / "kept.txt"
        assert kept.read_text() == "kept"
        await emu.force_timeout()
        assert kept.read_text() == "kept"
        await emu.invoke({})
        assert kept.read_text() == "kept"

    assert emu.shutdowns[:1] == [("failure", "SIGKILL", -9)]
    assert not kept.exists()


async def test_crash_reset_sends_shutdown_failure(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "ext-one")
    options: dict[str, Any] = {"extensions_dir": tmp_path / "extensions"}
    async with emulator(tmp_path, RUNTIME, **options) as emu:
        crashed = await emu.invoke({"exit": 3})
        await emu.wait_idle()

    assert crashed.json()["errorType"] == "Runtime.ExitError"
    assert emu.shutdowns == [("failure", None, 3)]
    log = extension_log(tmp_path, "ext-one")
    events = [entry["value"] for entry in log if entry["kind"] == "event"]
    assert [event["eventType"] for event in events] == ["INVOKE", "SHUTDOWN"]
    assert events[-1]["shutdownReason"] == "failure"


async def test_external_extension_crash_fails_the_invoke(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "fragile", behaviour="crash-on-invoke")
    options: dict[str, Any] = {"extensions_dir": tmp_path / "extensions"}
    async with emulator(tmp_path, RUNTIME, **options) as emu:
        result = await emu.invoke({"sleep": 0.5})
        await emu.wait_idle()

    assert result.json() == {
        "errorType": "Extension.Crash",
        "errorMessage": f"RequestId: {result.request_id} Error: Extension fragile "
        "exited with error: exit status 5",
    }
    [report] = emu.reports
    assert (report.status, report.error_type) == ("crash", "Extension.Crash")
    assert emu.shutdowns[0] == ("failure", "SIGTERM", 0)


@pytest.mark.parametrize(
    ("behaviour", "error_type"),
    [("exit-early", "Extension.Crash"), ("never-register", "Sandbox.Timedout")],
)
async def test_external_extension_must_register_during_init(
    tmp_path: Path, behaviour: str, error_type: str
) -> None:
    write_extension(tmp_path / "extensions", "lazy", behaviour=behaviour)
    options: dict[str, Any] = {
        "extensions_dir": tmp_path / "extensions",
        "init_timeout": 0.5,
    }
    async with emulator(tmp_path, RUNTIME, **options) as emu:
        result = await emu.invoke({})
        await emu.wait_idle()

    assert result.json()["errorType"] == error_type
    assert emu.starts == 0  # the runtime never started
    assert emu.shutdowns == [
        ("failure" if behaviour == "exit-early" else "timeout", None, None)
    ]


# -- the shutdown phase ---------------------------------------------------------


async def test_shutdown_without_extension_is_sigkill(tmp_path: Path) -> None:
    options: dict[str, Any] = {"env": {"ORDER_LOG": str(tmp_path / "order.log")}}
    async with emulator(tmp_path, RUNTIME, **options) as emu:
        await emu.invoke({})
        started = time.monotonic()
        await emu.shutdown()
        elapsed = time.monotonic() - started
        after = await emu.invoke({"n": 2})
        await emu.wait_idle()

    assert emu.shutdowns == [("spindown", "SIGKILL", -9), ("spindown", "SIGKILL", -9)]
    assert elapsed < 0.4
    assert not (tmp_path / "order.log").exists()  # no SIGTERM, ever
    assert after.json()["echo"] == {"n": 2}
    assert emu.reports[-1].init_duration_ms is not None  # cold again


async def test_shutdown_with_internal_extension_is_sigterm(tmp_path: Path) -> None:
    options: dict[str, Any] = {"env": {"RT_MODE": "internal"}}
    async with emulator(tmp_path, RUNTIME, **options) as emu:
        await emu.invoke({})
        await emu.shutdown()

    assert emu.shutdowns == [("spindown", "SIGTERM", 0)]


async def test_runtime_ignoring_sigterm_gets_sigkill_after_500_ms(
    tmp_path: Path,
) -> None:
    options: dict[str, Any] = {"env": {"RT_MODE": "internal,ignore-term"}}
    async with emulator(tmp_path, RUNTIME, **options) as emu:
        await emu.invoke({})
        started = time.monotonic()
        await emu.shutdown()
        default = time.monotonic() - started
        await emu.invoke({})
        started = time.monotonic()
        await emu.shutdown(budget_ms=150)
        short = time.monotonic() - started

    assert emu.shutdowns == [("spindown", "SIGTERM", -9)] * 2
    assert 0.48 <= default < 1.5
    assert 0.14 <= short < 0.45


async def test_shutdown_refuses_an_unknown_reason(tmp_path: Path) -> None:
    async with emulator(tmp_path, RUNTIME) as emu:
        with pytest.raises(ValueError, match="reason must be one of"):
            await emu.shutdown("bored")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="budget_ms must be 0 or more"):
            await emu.shutdown(budget_ms=-1)


async def test_real_runtime_flushes_buffered_events_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(STATEFUL_APP)
    out = tmp_path / "flushed.txt"
    command = [sys.executable, "-m", "statefulrt", "app.Handler"]
    emu = Emulator(
        command,
        cwd=tmp_path,
        env={"FLUSH_FILE": str(out)},
        report_stream=None,
        freeze=True,
    )
    async with emu:
        answers = [(await emu.invoke({"n": n})).json() for n in range(3)]
        await emu.wait_idle()
        flushed_before = out.exists()
        await emu.shutdown(budget_ms=300)

    assert answers == [{"pending": 1}, {"pending": 2}, {"pending": 3}]
    assert not flushed_before
    assert out.read_text().splitlines() == ["0000000001:[0, 1, 2]"]
    assert emu.shutdowns == [("spindown", "SIGTERM", 0)]


STATEFUL_APP = """
import os
from statefulrt import FlushPolicy, StatefulHandler

class Handler(StatefulHandler):
    flush_policy = FlushPolicy(every=1000)

    async def handle(self, event, context):
        self.state.buffer("events").append(event["n"])
        return {"pending": len(self.state.buffer("events"))}

    async def flush(self, batch):
        with open(os.environ["FLUSH_FILE"], "a") as out:
            out.write(f"{batch.epoch:010d}:{batch.items('events')}\\n")
"""


# -- freezing, idling and the testing controls -----------------------------------


@pytest.mark.parametrize("freeze", [True, False])
async def test_freeze_stops_background_work_between_invocations(
    tmp_path: Path, freeze: bool
) -> None:
    ticks = tmp_path / "ticks.txt"
    env = {"RT_MODE": "internal,ticker", "TICK_FILE": str(ticks)}
    async with emulator(tmp_path, RUNTIME, env=env, freeze=freeze) as emu:
        await emu.invoke({})
        await emu.wait_idle()
        before = ticks.read_text()
        await emu.idle(0.5)
        after = ticks.read_text()
        second = await emu.invoke({"n": 2})

    ticked = len(after.splitlines()) - len(before.splitlines())
    if freeze:
        assert after == before
    else:
        assert ticked >= 5
    assert second.json()["echo"] == {"n": 2}
    # Thawed before SIGTERM: a frozen runtime would never see the signal.
    assert emu.shutdowns == [("spindown", "SIGTERM", 0)]


async def test_idle_shutdown_spins_down_and_the_next_invoke_is_cold(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, RUNTIME, idle_shutdown=0.3) as emu:
        await emu.invoke({})
        tmpdir = emu.tmpdir
        await until(lambda: emu.shutdowns != [])
        assert emu.shutdowns == [("spindown", "SIGKILL", -9)]
        assert emu.tmpdir is None and tmpdir is not None
        assert not os.path.exists(tmpdir)
        again = await emu.invoke({})
        await emu.wait_idle()

    assert again.json()["tmpdir"] != tmpdir
    assert emu.starts == 2
    assert emu.reports[-1].init_duration_ms is not None


async def test_force_timeout_when_idle_resets_with_reason_timeout(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, RUNTIME, env={"RT_MODE": "internal"}) as emu:
        first = await emu.invoke({})
        await emu.force_timeout()
        assert emu.pid is None
        second = await emu.invoke({})
        await emu.wait_idle()

    assert emu.shutdowns[0] == ("timeout", "SIGTERM", 0)
    assert first.json()["tmpdir"] == second.json()["tmpdir"]
    assert emu.starts == 2


async def test_force_timeout_cuts_the_invocation_in_flight(tmp_path: Path) -> None:
    async with emulator(tmp_path, RUNTIME, timeout=20) as emu:
        started = time.monotonic()
        slow = asyncio.create_task(emu.invoke({"sleep": 10}))
        await until(lambda: emu.pid is not None)
        await asyncio.sleep(0.2)
        await emu.force_timeout()
        result = await bounded(slow)
        elapsed = time.monotonic() - started

    assert elapsed < 5
    assert result.json() == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {result.request_id} Error: Task timed out "
        "after 20.00 seconds",
    }
    assert emu.reports[0].status == "timeout"
    assert emu.shutdowns[0] == ("timeout", "SIGKILL", -9)


async def test_kill_is_a_crash_mid_invocation(tmp_path: Path) -> None:
    async with emulator(tmp_path, RUNTIME, env={"RT_MODE": "internal"}) as emu:
        slow = asyncio.create_task(emu.invoke({"sleep": 10}))
        await until(lambda: emu.pid is not None)
        await asyncio.sleep(0.2)
        await emu.kill()
        result = await bounded(slow)
        await emu.wait_idle()

    assert result.json()["errorMessage"] == (
        f"RequestId: {result.request_id} Error: Runtime exited with error: "
        "signal: killed"
    )
    assert emu.shutdowns[0] == ("failure", "SIGKILL", -9)


async def test_runtime_killed_while_idle_is_replaced_before_the_next_event(
    tmp_path: Path,
) -> None:
    async with emulator(tmp_path, RUNTIME) as emu:
        await emu.invoke({})
        await emu.wait_idle()
        pid = emu.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # not frozen, so it can die idle
        await until(lambda: process_gone(pid))  # dead, maybe not reaped yet
        result = await emu.invoke({"n": 2})
        await emu.wait_idle()

    # The event never reached the dead runtime: a new environment took it.
    assert result.json()["echo"] == {"n": 2}
    assert emu.starts == 2
    assert [report.status for report in emu.reports] == ["success", "success"]
    assert emu.shutdowns[0] == ("failure", None, -9)


async def test_sandbox_process_sees_an_exit_before_asyncio_does(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "pass"]
    process = await SandboxProcess.spawn(command, env=os.environ, cwd=str(tmp_path))
    # The loop does not run, so asyncio cannot hear of the exit yet.
    time.sleep(0.5)  # noqa: ASYNC251
    seen_by_asyncio = not process.alive
    seen_by_waitid = process.has_exited()
    await process.kill()

    assert (seen_by_asyncio, seen_by_waitid) == (False, True)
    assert process.returncode == 0


async def test_restart_starts_a_fresh_initialised_environment(tmp_path: Path) -> None:
    async with emulator(tmp_path, RUNTIME, env={"RT_MODE": "internal"}) as emu:
        first = await emu.invoke({})
        old_pid = emu.pid
        await emu.restart()
        new_pid = emu.pid
        second = await emu.invoke({})
        await emu.wait_idle()

    assert new_pid is not None and new_pid != old_pid
    assert emu.shutdowns[0] == ("spindown", "SIGTERM", 0)
    assert first.json()["tmpdir"] != second.json()["tmpdir"]
    assert emu.starts == 2
    # Init happened before the invoke, so its REPORT carries no init.
    assert [r.init_duration_ms is None for r in emu.reports] == [False, True]


async def test_restart_raises_when_init_fails(tmp_path: Path) -> None:
    async with emulator(tmp_path, "import sys\nsys.exit(7)\n") as emu:
        with pytest.raises(RuntimeError, match="Runtime.ExitError: Runtime exited"):
            await emu.restart()

    assert emu.shutdowns == [("failure", None, 7)]


# -- the command line -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_cli_idle_shutdown_and_ctrl_c_flush_through_sigterm(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(STATEFUL_APP)
    out = tmp_path / "flushed.txt"
    port = free_port()
    command = [sys.executable, "-m", "statefulrt.cli", "dev", "app.Handler"]
    command += ["--port", str(port), "--idle-shutdown", "0.3"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "FLUSH_FILE": str(out)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"

    def invoke(n: int) -> bytes:
        request = urllib.request.Request(url, data=b'{"n": %d}' % n, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            body: bytes = response.read()
            return body

    try:
        wait_for(lambda: listening(port))
        answers = [invoke(n) for n in range(3)]
        # Idle for 0.3 s: spun down, with SIGTERM and the shutdown flush.
        wait_for(out.exists, seconds=10)
        late = invoke(3)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)

    assert process.returncode == 0
    assert answers == [b'{"pending":%d}' % n for n in (1, 2, 3)]
    assert late == b'{"pending":1}'
    # Ctrl-C lets the answered invocation end (and report), then spins the
    # second environment down the same way.
    assert out.read_text().splitlines() == [
        "0000000001:[0, 1, 2]",
        "0000000001:[3]",
    ]
    assert err.count(b"\tInit Duration: ") == 2


def test_cli_refuses_a_missing_extensions_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = subprocess.run(
        [sys.executable, "-m", "statefulrt.cli", "emulate", "--extensions-dir"]
        + [str(missing), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"statefulrt: error: extensions_dir {str(missing)!r} is not a directory\n"
    )
