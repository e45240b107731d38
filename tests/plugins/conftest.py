"""Real servers on loopback for the plugins' tests: PostgreSQL and moto's S3.

PostgreSQL comes from ``STATEFULRT_TEST_PG_DSN`` when it is set (CI starts a
cluster and sets it), else from a throwaway cluster built with the Debian or
PGDG binaries under a temporary folder. moto's standalone server is always
started here. Both bind 127.0.0.1 only, and every process started here is
stopped by its pid at the end of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# How long a server may take to answer after it was started.
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop ``proc`` (by its pid) politely, then for good."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT)


# -- PostgreSQL ---------------------------------------------------------------


def _pg_bindir() -> Path | None:
    """The folder holding initdb and postgres: PATH first, then Debian/PGDG."""
    found = shutil.which("initdb")
    if found is not None:
        bindir = Path(found).resolve().parent
        if (bindir / "postgres").exists():
            return bindir
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]),
    )
    return Path(candidates[-1]).parent if candidates else None


def _pg_user() -> str | None:
    """Who runs the cluster: us, or ``postgres`` when we are root.

    initdb refuses to run as root, so root hands the cluster to the
    ``postgres`` account the Debian package creates. None: nobody can.
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return "postgres"


async def _pg_answers(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A DSN of a PostgreSQL server on loopback we may create tables in."""
    pytest.importorskip("asyncpg", reason="pip install 'statefulrt[postgres]'")
    from_env = os.environ.get("STATEFULRT_TEST_PG_DSN")
    if from_env:
        yield from_env
        return

    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server: set STATEFULRT_TEST_PG_DSN, or install the "
            "server binaries (apt-get install postgresql) so a throwaway cluster "
            "can be started"
        )
    user = _pg_user()
    if user is None:
        pytest.skip(
            "no PostgreSQL server: initdb cannot run as root and there is no "
            "'postgres' account to run it as; set STATEFULRT_TEST_PG_DSN or add "
            "the account (useradd --system postgres)"
        )

    root = Path(tempfile.mkdtemp(prefix="statefulrt-pg-"))
    data = root / "data"
    owner = pwd.getpwnam(user)
    os.chown(root, owner.pw_uid, owner.pw_gid)
    as_user = {"user": user} if os.geteuid() == 0 else {}
    proc: subprocess.Popen[bytes] | None = None
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    try:
        subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            cwd=root,
            check=True,
            capture_output=True,
            timeout=120,
            **as_user,  # type: ignore[call-overload]
        )
        port = free_port()
        # fsync off: a throwaway cluster need not survive a power cut.
        proc = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-k",
                str(root),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-F",
            ],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=log,
            **as_user,  # type: ignore[call-overload]
        )
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + _START_TIMEOUT
        while not asyncio.run(_pg_answers(dsn)):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (root / "server.log").read_text(errors="replace")
                pytest.fail(f"the throwaway PostgreSQL did not start:\n{log}")
            time.sleep(0.1)
        yield dsn
    finally:
        if proc is not None:
            # SIGINT is PostgreSQL's fast shutdown: backends end with it.
            stop_process(proc, signal.SIGINT)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


# -- moto's S3 ----------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto server started for this session."""
    pytest.importorskip("moto.server", reason="pip install 'statefulrt[test]'")
    for _attempt in range(3):  # the free port may be taken before moto binds it
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if _wait_for_http(port, proc):
                yield f"http://127.0.0.1:{port}"
                return
        finally:
            stop_process(proc)
    pytest.fail("moto's server did not start on 127.0.0.1 in three attempts")


def _wait_for_http(port: int, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /moto-api/ HTTP/1.0\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/1."):
                    return True
        time.sleep(0.1)
    return False


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials: moto accepts any, and no real account is reachable."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
