"""statefulrt package: the zip runs from an empty folder with a clean environment."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from statefulrt._package import build, extract

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_package_leaves_an_earlier_build_out(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text("def handler(e, c):\n    return 1\n")
    (source / ".env").write_text("SECRET=1\n")
    output = source / "function.zip"
    first = build(source, output, python=PYTHON)
    second = build(source, output, python=PYTHON)
    third = build(source, source / "dist" / "other.zip", python=PYTHON)
    assert "function.zip" not in second
    assert first == second == third
    assert ".env" not in first


def test_package_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="arch must be one of x86_64, arm64"):
        build(tmp_path, tmp_path / "f.zip", arch="sparc")
    with pytest.raises(ValueError, match="python must be '3.11' or newer"):
        build(tmp_path, tmp_path / "f.zip", python="2.7")
    with pytest.raises(ValueError, match="is not a directory"):
        build(tmp_path / "missing", tmp_path / "f.zip")


@pytest.mark.skipif(
    shutil.which(f"python{PYTHON}", path="/usr/bin:/bin") is None,
    reason=f"no system python{PYTHON} to run the packaged bootstrap with",
)
@pytest.mark.timeout(240)
def test_package_zip_runs_under_emulate_with_clean_environment(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text(
        "import orjson\n"
        "def handler(event, context):\n"
        "    return {'packaged': event, 'cold': context.is_cold}\n"
    )
    names = build(source, tmp_path / "function.zip", python=PYTHON)
    assert "bootstrap" in names and "app.py" in names
    assert "vendor/statefulrt/_runtime.py" in names
    assert any(name.startswith("vendor/orjson/") for name in names)
    with zipfile.ZipFile(tmp_path / "function.zip") as archive:
        mode = archive.getinfo("bootstrap").external_attr >> 16
    assert mode & 0o777 == 0o755

    task = tmp_path / "task"
    task.mkdir()
    extract(tmp_path / "function.zip", task)
    port = _free_port()
    emulator = subprocess.Popen(
        [
            sys.executable, "-m", "statefulrt.cli", "emulate",
            "--port", str(port), "--timeout", "10",
            "--", "./bootstrap", "app.handler",
        ],
        cwd=task,
        env={"PATH": "/usr/bin:/bin"},  # nothing of this venv leaks in
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
        body = b""
        for _ in range(200):
            try:
                request = urllib.request.Request(url, data=b'{"k": 1}', method="POST")
                with urllib.request.urlopen(request, timeout=30) as response:
                    body = response.read()
                break
            except OSError:
                time.sleep(0.05)
    finally:
        emulator.send_signal(signal.SIGINT)
        out, err = emulator.communicate(timeout=30)
    assert body == b'{"packaged":{"k":1},"cold":true}', err.decode()
