"""The pytest plugin: ``lambda_function`` as a user's test suite would use it.

The fixture comes from the installed ``pytest11`` entry point, not from an
import; the handlers are statefulrt's real runtime in a process of its own.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from statefulrt.emulator import Emulator
from statefulrt.testing import LambdaFunctionFactory

pytest_plugins = ["pytester"]

APP = """
import asyncio, os, time
from statefulrt import FlushPolicy, StatefulHandler

def echo(event, context):
    return {"event": event, "tmp": os.environ["TMPDIR"], "pid": os.getpid()}

def probe(event, context):
    names = ("AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_MAX_CONCURRENCY")
    return [os.environ.get(name) for name in names]

class Ticking(StatefulHandler):
    async def init(self):
        self.ticker = asyncio.get_running_loop().create_task(self.tick())

    async def tick(self):
        while True:
            with open(os.environ["TICK_FILE"], "a") as out:
                out.write(f"{time.time()}\\n")
            await asyncio.sleep(0.05)

    async def handle(self, event, context):
        return "ok"

class Buffered(StatefulHandler):
    flush_policy = FlushPolicy(every=1000)

    async def handle(self, event, context):
        self.state.buffer("events").append(event["n"])
        return {"pending": len(self.state.buffer("events"))}

    async def flush(self, batch):
        with open(os.environ["FLUSH_FILE"], "a") as out:
            out.write(f"{batch.items('events')}\\n")
"""

EXTENSION = """#!{python}
import http.client, json, os, sys

host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
name = os.path.basename(sys.argv[0])

def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(host, int(port))
    connection.request(
        method, "/2020-01-01/extension" + path, body=body, headers=headers or {{}}
    )
    response = connection.getresponse()
    return response, response.read()

response, _ = call(
    "POST", "/register", b'{{"events": ["INVOKE", "SHUTDOWN"]}}',
    {{"Lambda-Extension-Name": name}},
)
headers = {{"Lambda-Extension-Identifier":
           response.getheader("Lambda-Extension-Identifier")}}
while True:
    _, body = call("GET", "/event/next", headers=headers)
    event = json.loads(body)
    with open(os.environ["EXT_LOG"], "a") as out:
        out.write(json.dumps(event) + "\\n")
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


async def test_lambda_function_runs_the_handler_cold_then_warm(
    lambda_function: LambdaFunctionFactory, app_dir: Path
) -> None:
    fn = await lambda_function("app.echo", cwd=app_dir, timeout=2, report_stream=None)
    first = await fn.invoke({"n": 1})
    second = await fn.invoke({"n": 2})
    await fn.wait_idle()

    assert isinstance(fn, Emulator)
    assert first.json() == {"event": {"n": 1}, "tmp": fn.tmpdir, "pid": fn.pid}
    assert second.json()["pid"] == first.json()["pid"]
    cold, warm = fn.reports
    assert cold.init_duration_ms is not None and warm.init_duration_ms is None


@pytest.mark.parametrize("freeze", [True, False])
async def test_lambda_function_freezes_between_invocations(
    lambda_function: LambdaFunctionFactory, app_dir: Path, freeze: bool
) -> None:
    ticks = app_dir / "ticks.txt"
    fn = await lambda_function(
        "app.Ticking",
        cwd=app_dir,
        env={"TICK_FILE": str(ticks)},
        freeze=freeze,
        report_stream=None,
    )
    await fn.invoke({})
    await fn.wait_idle()
    before = ticks.read_text()
    await fn.idle(0.5)
    after = ticks.read_text()
    await fn.invoke({})

    if freeze:
        assert after == before
    else:
        assert len(after.splitlines()) - len(before.splitlines()) >= 5


async def test_lambda_function_timeout_kill_restart_and_shutdown(
    lambda_function: LambdaFunctionFactory, app_dir: Path
) -> None:
    flushed = app_dir / "flushed.txt"
    fn = await lambda_function(
        "app.Buffered",
        cwd=app_dir,
        env={"FLUSH_FILE": str(flushed)},
        report_stream=None,
    )

    # A timeout reset: SIGTERM (the runtime registered its extension), and
    # the shutdown flush saves what was buffered.
    await fn.invoke({"n": 1})
    await fn.invoke({"n": 2})
    await fn.force_timeout()
    assert flushed.read_text() == "[1, 2]\n"

    # A crash loses what was not flushed: SIGKILL, no warning.
    await fn.invoke({"n": 3})
    await fn.kill()
    assert flushed.read_text() == "[1, 2]\n"

    # A fresh environment (the killed one is gone already), initialised
    # before the invoke that uses it.
    await fn.restart()
    pid = fn.pid
    assert (await fn.invoke({"n": 4})).json() == {"pending": 1}
    assert fn.pid == pid
    await fn.shutdown(reason="spindown", budget_ms=300)

    assert flushed.read_text() == "[1, 2]\n[4]\n"
    assert fn.shutdowns == [
        ("timeout", "SIGTERM", 0),
        ("failure", "SIGKILL", -9),
        ("spindown", "SIGTERM", 0),
    ]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"max_concurrency": 3}, ["lambda-managed-instances", "3"]),
        ({"snap_start": True}, ["snap-start", None]),
    ],
)
async def test_lambda_function_plays_managed_instances_and_snap_start(
    lambda_function: LambdaFunctionFactory,
    app_dir: Path,
    options: dict[str, object],
    expected: list[str | None],
) -> None:
    # Managed Instances never freeze, so the default freeze gives way.
    fn = await lambda_function("app.probe", cwd=app_dir, report_stream=None, **options)
    result = await fn.invoke({})
    await fn.wait_idle()

    assert result.json() == expected
    [report] = fn.reports
    restored = report.restore_duration_ms is not None
    assert restored == ("snap_start" in options)


async def test_lambda_function_launches_extensions(
    lambda_function: LambdaFunctionFactory, app_dir: Path
) -> None:
    extensions = app_dir / "extensions"
    extensions.mkdir()
    script = extensions / "watcher"
    script.write_text(EXTENSION.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = app_dir / "ext.jsonl"

    fn = await lambda_function(
        "app.echo",
        cwd=app_dir,
        env={"EXT_LOG": str(log)},
        extensions_dir=extensions,
        report_stream=None,
    )
    result = await fn.invoke({})
    await fn.shutdown()

    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [event["eventType"] for event in events] == ["INVOKE", "SHUTDOWN"]
    assert events[0]["requestId"] == result.request_id
    assert events[1]["shutdownReason"] == "spindown"


def test_lambda_function_is_shut_down_at_teardown(
    pytester: pytest.Pytester, app_dir: Path
) -> None:
    record = pytester.path / "record.json"
    pytester.makeini(
        """
        [pytest]
        asyncio_default_fixture_loop_scope = function
        """
    )
    pytester.makepyfile(
        test_user=textwrap.dedent(
            f"""
            import json
            import pytest

            @pytest.mark.asyncio
            async def test_two_functions(lambda_function):
                seen = []
                for _ in range(2):
                    fn = await lambda_function("app.echo", cwd={str(app_dir)!r})
                    assert (await fn.invoke({{}})).status == 200
                    seen.append({{"pid": fn.pid, "tmpdir": fn.tmpdir}})
                with open({str(record)!r}, "w") as out:
                    json.dump(seen, out)
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)

    result.assert_outcomes(passed=1)
    seen = json.loads(record.read_text())
    assert len({entry["pid"] for entry in seen}) == 2
    for entry in seen:
        assert not os.path.exists(entry["tmpdir"])
        with pytest.raises(ProcessLookupError):
            os.kill(entry["pid"], 0)
