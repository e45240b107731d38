"""The statefulrt command: run, emulate, dev and invoke, as a user types them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from statefulrt.emulator import Emulator

STATEFULRT = [sys.executable, "-m", "statefulrt.cli"]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(
        "def handler(event, context):\n"
        "    if event.get('fail'):\n"
        "        raise ValueError('asked to fail')\n"
        "    return {'got': event, 'memory': context.memory_limit_in_mb}\n"
    )
    return tmp_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, deadline: float = 20.0) -> None:
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_cli_run_without_runtime_api_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_RUNTIME_API"}
    for command in (
        [sys.executable, "-m", "statefulrt", "app.handler"],
        [*STATEFULRT, "run", "app.handler"],
    ):
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        assert done.returncode == 2
        assert done.stderr.startswith(
            "statefulrt: AWS_LAMBDA_RUNTIME_API is not set: run under Lambda, "
            "or start the runtime with 'statefulrt dev HANDLER'"
        )


async def test_cli_invoke_prints_result_and_fails_on_function_error(
    app_dir: Path, tmp_path: Path
) -> None:
    emu = Emulator(
        [sys.executable, "-m", "statefulrt", "app.handler"],
        cwd=app_dir,
        report_stream=None,
    )
    async with emu:
        url = emu.url + "/2015-03-31/functions/function/invocations"
        event_file = tmp_path / "event.json"
        event_file.write_text('{"photo": "a.jpg"}')

        ok = await _run([*STATEFULRT, "invoke", "--url", url, str(event_file)])
        failed = await _run(
            [*STATEFULRT, "invoke", "--url", url, "-"], stdin=b'{"fail": true}'
        )

    assert ok == (0, b'{"got":{"photo":"a.jpg"},"memory":"128"}\n', b"")
    code, out, err = failed
    assert code == 1
    assert b'"errorType":"ValueError"' in out
    assert err == b"statefulrt invoke: function error (Unhandled)\n"


async def _run(command: list[str], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out, err


def test_cli_invoke_unreachable_url() -> None:
    port = _free_port()
    done = subprocess.run(
        [*STATEFULRT, "invoke", "--url", f"http://127.0.0.1:{port}/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"statefulrt invoke: cannot reach http://127.0.0.1:{port}/x"
    )


@pytest.mark.parametrize("mode", ["dev", "emulate"])
def test_cli_dev_and_emulate_serve_until_interrupted(app_dir: Path, mode: str) -> None:
    port = _free_port()
    if mode == "dev":
        command = [*STATEFULRT, "dev", "app.handler", "--port", str(port)]
    else:
        command = [
            *STATEFULRT,
            "emulate",
            "--port",
            str(port),
            "--timeout",
            "2",
            "--",
            sys.executable,
            "-m",
            "awslambdaric",
            "app.handler",
        ]
    process = subprocess.Popen(
        command, cwd=app_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for_port(port)
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
        request = urllib.request.Request(url, data=b'{"n": 1}', method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        assert body.replace(b" ", b"") == b'{"got":{"n":1},"memory":"128"}'
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert b"START RequestId: " in err + out
    assert b"\tInit Duration: " in err + out


def test_cli_dev_plays_managed_instances(app_dir: Path) -> None:
    (app_dir / "probe.py").write_text(
        "import os\n"
        "def handler(event, context):\n"
        "    return [os.environ['AWS_LAMBDA_INITIALIZATION_TYPE'],\n"
        "            os.environ['AWS_LAMBDA_MAX_CONCURRENCY']]\n"
    )
    port = _free_port()
    command = [*STATEFULRT, "dev", "probe.handler", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--max-concurrency", "3"],
        cwd=app_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port)
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
        request = urllib.request.Request(url, data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0
    assert body == b'["lambda-managed-instances","3"]'


def test_cli_emulate_refuses_freeze_with_max_concurrency() -> None:
    done = subprocess.run(
        [*STATEFULRT, "emulate", "--freeze", "--max-concurrency", "2", "--", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "statefulrt emulate: error: --freeze cannot be combined with --max-concurrency"
    )


def test_cli_dev_sigterm_spins_the_sandbox_down(tmp_path: Path) -> None:
    (tmp_path / "pidapp.py").write_text(
        "import os\ndef handler(event, context):\n    return os.getpid()\n"
    )
    port = _free_port()
    process = subprocess.Popen(
        [*STATEFULRT, "dev", "pidapp.handler", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port)
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
        request = urllib.request.Request(url, data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            runtime_pid = int(response.read())
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(runtime_pid, 0)  # no runtime left behind, frozen or not


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--timeout",
            "inf",
            "argument --timeout: inf is out of range: use 0.001 to 900",
        ),
        ("--port", "99999", "argument --port: 99999 is out of range: use 0 to 65535"),
        ("--memory", "64", "argument --memory: 64 is out of range: use 128 to 10240"),
        ("--timeout", "soon", "argument --timeout: 'soon' is not a number"),
    ],
)
def test_cli_dev_refuses_out_of_range_options(
    option: str, value: str, message: str
) -> None:
    done = subprocess.run(
        [*STATEFULRT, "dev", "app.handler", option, value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
