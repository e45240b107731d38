"""``statefulrt run``: what a Lambda ``bootstrap`` executes.

Kept to the imports the runtime path needs, because everything imported here
is paid for on every cold start.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from . import _logging
from ._client import TRANSPORT_ENV, RuntimeApiClient, transport_named
from ._config import RuntimeConfig
from ._exceptions import ConfigError
from ._runtime import Runtime

USAGE = "usage: statefulrt run [HANDLER]   (HANDLER defaults to $_HANDLER)"


def run(argv: Sequence[str] = ()) -> int:
    """Run the runtime until shutdown and return the exit code."""
    args = list(argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if len(args) > 1:
        print(
            f"statefulrt run takes one handler, got {args!r}\n{USAGE}", file=sys.stderr
        )
        return 2
    try:
        config = RuntimeConfig.from_env(handler=args[0] if args else None)
        _logging.install(config)
        client = _client(config, os.environ.get(TRANSPORT_ENV))
    except (ConfigError, ValueError) as exc:
        print(f"statefulrt: {exc}", file=sys.stderr)
        return 2

    # Lambda reads stdout line by line; print() must not sit in a buffer
    # while the sandbox is frozen.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)

    async def main() -> int:
        return await Runtime(config, client=client).run()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main())


def _client(config: RuntimeConfig, transport: str | None) -> RuntimeApiClient | None:
    # STATEFULRT_TRANSPORT swaps the HTTP client, for benchmarks/ to compare
    if not transport:
        return None
    return RuntimeApiClient(
        config.runtime_api, transport=transport_named(transport, config.runtime_api)
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
