"""The ``statefulrt`` command.

``run`` is the Lambda bootstrap and takes a fast path that imports nothing
else; the other subcommands load argparse, aiohttp and the emulator on demand.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_INVOKE_URL = "http://127.0.0.1:9000/2015-03-31/functions/function/invocations"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        from ._bootstrap import run

        return run(args[1:])
    return _main_slow(args)


def _main_slow(args: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="statefulrt",
        description="An asyncio runtime for AWS Lambda that keeps state warm.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the runtime (the Lambda bootstrap)")
    run.add_argument("handler", nargs="?", help="module.function (default: $_HANDLER)")

    emulate = commands.add_parser(
        "emulate", help="play the Lambda service for any runtime command"
    )
    _emulator_options(emulate)
    emulate.add_argument(
        "--freeze",
        action="store_true",
        help="stop the runtime's processes between invocations, as Lambda does",
    )
    emulate.add_argument(
        "runtime_command", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS"
    )

    dev = commands.add_parser("dev", help="emulator + statefulrt's own runtime")
    dev.add_argument("handler", help="module.function or module.HandlerClass")
    _emulator_options(dev)
    dev.add_argument(
        "--no-freeze",
        dest="freeze",
        action="store_false",
        help="let the runtime run between invocations (Lambda freezes it)",
    )

    invoke = commands.add_parser("invoke", help="invoke a running emulator")
    invoke.add_argument("--url", default=DEFAULT_INVOKE_URL)
    invoke.add_argument(
        "event", nargs="?", default=None, help="event JSON file, or - for stdin"
    )

    package = commands.add_parser(
        "package", help="build a deployment zip for the provided.al2023 runtime"
    )
    package.add_argument("source", help="the folder holding the function's code")
    package.add_argument("-o", "--output", default="function.zip")
    package.add_argument("--arch", choices=["x86_64", "arm64"], default="x86_64")
    package.add_argument(
        "--python",
        default=f"{sys.version_info.major}.{sys.version_info.minor}",
        help="the Python version the function runs on (default: this one)",
    )

    options = parser.parse_args(args)
    if getattr(options, "max_concurrency", None) is not None:
        if options.command == "dev":
            options.freeze = False  # Managed Instances never freeze
        elif options.freeze:
            emulate.error("--freeze cannot be combined with --max-concurrency")
    if options.command == "run":
        from ._bootstrap import run as run_runtime

        return run_runtime([options.handler] if options.handler else [])
    if options.command == "invoke":
        return _invoke(options.url, options.event)
    if options.command == "package":
        return _package(options.source, options.output, options.arch, options.python)

    if options.command == "dev":
        command = [sys.executable, "-m", "statefulrt", options.handler]
        handler: str | None = options.handler
    else:
        command = list(options.runtime_command)
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            parser.error("emulate needs a runtime command after '--'")
        handler = None
    return _emulate(command, options, handler)


def _emulator_options(parser: object) -> None:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    parser.add_argument("--host", default="127.0.0.1", help="bind address")
    parser.add_argument(
        "--port", type=_ranged(int, 0, 65535), default=9000, help="invoke port"
    )
    parser.add_argument(
        "--timeout",
        type=_ranged(float, 0.001, 900),
        default=3.0,
        help="function timeout in seconds (Lambda allows up to 900)",
    )
    parser.add_argument(
        "--memory",
        type=_ranged(int, 128, 10240),
        default=128,
        help="memory size in MB (128 to 10240, as on Lambda)",
    )
    parser.add_argument(
        "--extensions-dir",
        metavar="DIR",
        default=None,
        help="launch every executable in DIR as an external extension "
        "(Lambda's /opt/extensions)",
    )
    parser.add_argument(
        "--idle-shutdown",
        metavar="S",
        type=_ranged(float, 0.001, 86400),
        default=None,
        help="shut the environment down after S idle seconds "
        "(the next invoke starts cold)",
    )
    parser.add_argument(
        "--max-concurrency",
        metavar="N",
        type=_ranged(int, 1, 1024),
        default=None,
        help="play Lambda Managed Instances: up to N invocations at once in one "
        "environment (AWS_LAMBDA_MAX_CONCURRENCY), never frozen",
    )
    parser.add_argument(
        "--snap-start",
        action="store_true",
        help="play SnapStart: every environment is restored right after its "
        "init (before-snapshot and after-restore hooks run)",
    )


def _ranged(kind: type[float] | type[int], low: float, high: float) -> Any:
    """An argparse type: a finite ``kind`` between ``low`` and ``high``."""

    def parse(text: str) -> float | int:
        import argparse
        import math

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n integer' if kind is int else ' number'}"
            ) from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: use {low:g} to {high:g}"
            )
        return value

    return parse


def _emulate(command: list[str], options: object, handler: str | None) -> int:
    import asyncio
    import signal

    from .emulator import Emulator

    async def serve() -> None:
        emulator = Emulator(
            command,
            host=getattr(options, "host"),  # noqa: B009
            port=getattr(options, "port"),  # noqa: B009
            timeout=getattr(options, "timeout"),  # noqa: B009
            memory_mb=getattr(options, "memory"),  # noqa: B009
            handler=handler,
            extensions_dir=getattr(options, "extensions_dir"),  # noqa: B009
            freeze=getattr(options, "freeze"),  # noqa: B009
            idle_shutdown=getattr(options, "idle_shutdown"),  # noqa: B009
            max_concurrency=getattr(options, "max_concurrency"),  # noqa: B009
            snap_start=getattr(options, "snap_start"),  # noqa: B009
        )
        # Ctrl-C cancels serve(); leaving the block spins the environment
        # down with the shutdown budget (SIGTERM first when an extension
        # registered), as Lambda would, before the emulator exits.
        # SIGTERM (a service manager, `kill`) ends it the same way as Ctrl-C.
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with emulator:
            print(
                f"statefulrt emulator: invoke with POST {emulator.url}"
                "/2015-03-31/functions/function/invocations, or stream with "
                f"POST {emulator.url}/2021-11-15/functions/function/"
                "response-streaming-invocations  (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        # A bad option value (missing extensions dir, bad function name).
        sys.stderr.write(f"statefulrt: error: {exc}\n")
        return 2
    except OSError as exc:  # the port is taken, the host does not resolve
        host, port = getattr(options, "host"), getattr(options, "port")  # noqa: B009
        sys.stderr.write(f"statefulrt: cannot serve on {host}:{port}: {exc}\n")
        return 2
    return 0


def _package(source: str, output: str, arch: str, python: str) -> int:
    import subprocess
    from pathlib import Path

    from ._package import build

    try:
        names = build(Path(source), Path(output), arch=arch, python=python)
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        sys.stderr.write(f"statefulrt package: {exc}\n")
        return 1
    size = Path(output).stat().st_size
    print(
        f"{output}: {len(names)} files, {size / 1e6:.1f} MB (Python {python}, {arch})"
    )
    return 0


def _invoke(url: str, event_path: str | None) -> int:
    import http.client
    import urllib.error
    import urllib.request

    if event_path is None:
        payload = b"{}"
    elif event_path == "-":
        payload = sys.stdin.buffer.read()
    else:
        try:
            with open(event_path, "rb") as source:
                payload = source.read()
        except OSError as exc:
            sys.stderr.write(f"statefulrt invoke: cannot read the event: {exc}\n")
            return 2

    try:
        request = urllib.request.Request(
            url,
            data=payload,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
    except ValueError as exc:
        sys.stderr.write(f"statefulrt invoke: --url {url!r} is not a URL: {exc}\n")
        return 2
    try:
        with urllib.request.urlopen(request, timeout=900) as response:
            body = response.read()
            function_error = response.headers.get("X-Amz-Function-Error")
    except urllib.error.HTTPError as exc:
        sys.stderr.write(f"statefulrt invoke: {url} answered {exc.code}\n")
        sys.stdout.buffer.write(exc.read() + b"\n")
        return 1
    except urllib.error.URLError as exc:
        sys.stderr.write(f"statefulrt invoke: cannot reach {url}: {exc.reason}\n")
        return 1
    except (http.client.HTTPException, ValueError) as exc:  # a port like 'abc'
        sys.stderr.write(f"statefulrt invoke: --url {url!r} is not usable: {exc}\n")
        return 2

    sys.stdout.buffer.write(body + b"\n")
    sys.stdout.flush()
    if function_error:
        sys.stderr.write(f"statefulrt invoke: function error ({function_error})\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
