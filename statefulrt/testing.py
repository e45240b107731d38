"""pytest fixtures that run a handler against the built-in emulator.

statefulrt registers this module as a pytest plugin, so a test suite only
has to name the fixture. It needs pytest-asyncio (``statefulrt[test]``). The
handler runs as it does on Lambda: ``python -m statefulrt HANDLER`` in a
process of its own, talking to the emulator over the Runtime API, frozen
between invocations, and shut down with Lambda's SIGTERM budget::

    # tests/test_app.py; app.py (next to it) defines a StatefulHandler `Handler`
    from pathlib import Path

    async def test_buffered_events_are_flushed_at_shutdown(lambda_function):
        fn = await lambda_function("app.Handler", cwd=Path(__file__).parent)

        for n in range(3):
            assert (await fn.invoke({"n": n})).status == 200
        await fn.idle(1.0)                  # frozen: no timer, no task runs
        await fn.shutdown(budget_ms=300)    # SIGTERM, then 300 ms to flush

        assert fn.shutdowns == [("spindown", "SIGTERM", 0)]

``await lambda_function(handler, *, cwd=None, env=None, timeout=3.0,
freeze=None, extensions_dir=None, max_concurrency=None, snap_start=False,
**options)`` returns a started :class:`statefulrt.emulator.Emulator`; ``cwd``
is the task root (default: the current directory), ``env`` adds environment
variables, ``timeout`` is the function timeout in seconds, ``freeze`` stops
the runtime between invocations (the default: yes, as Lambda does, except
under Managed Instances, which never freeze), ``max_concurrency`` plays Lambda
Managed Instances (that many invocations at once in one environment),
``snap_start`` plays SnapStart (the environment is restored right after its
init, with the handler's ``before_snapshot`` and ``after_restore`` hooks), and
``options`` go to the ``Emulator`` as they are (``memory_mb``,
``function_name``, ``report_stream``...). The runtime starts, cold, at the
first invoke. Every emulator a test made is spun down when the test ends.

What a test can do with the returned emulator:

- ``await fn.invoke(event)``: invoke over HTTP; an ``InvokeResult``
  (``status``, ``payload``, ``json()``, ``function_error``, ``request_id``);
- ``async with fn.invoke_stream(event) as response``: invoke with response
  streaming; ``async for piece in response`` as the pieces arrive, then
  ``response.error_code`` / ``response.error()`` for a mid-stream failure;
- ``await fn.wait_pollers(n)``: under Managed Instances, wait until ``n``
  pollers are idle (after ``restart()``, before a burst of invocations);
- ``await fn.idle(seconds)``: let the environment sit idle (frozen);
- ``await fn.force_timeout()``: reset as a timeout does (reason ``timeout``);
- ``await fn.shutdown(reason="spindown", budget_ms=None)``: Lambda's
  shutdown phase, with the platform's budget unless one is given;
- ``await fn.kill()``: SIGKILL the runtime, like a crash (reason ``failure``);
- ``await fn.restart()``: a fresh environment, initialised, right now;
- ``fn.reports`` (REPORT lines as records), ``fn.shutdowns`` (each end as
  ``(reason, signal, exit_code)``), ``fn.tmpdir`` (the environment's TMPDIR,
  kept across resets), ``fn.pid``, ``fn.starts``, ``await fn.wait_idle()``.

Importing this module stays cheap because pytest loads it in every run: the
emulator (and aiohttp) are imported only when the fixture is used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["LambdaFunctionFactory"]


class LambdaFunctionFactory(Protocol):
    """The type of the ``lambda_function`` fixture, for annotating tests."""

    async def __call__(
        self,
        handler: str,
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        # The function's Lambda timeout, not a bound on this call.
        timeout: float = 3.0,  # noqa: ASYNC109
        freeze: bool | None = None,
        extensions_dir: str | os.PathLike[str] | None = None,
        max_concurrency: int | None = None,
        snap_start: bool = False,
        **options: Any,
    ) -> Emulator: ...


try:
    import pytest_asyncio
except ImportError:  # the plugin must not break runs that do not use it

    @pytest.fixture(name="lambda_function")
    def _lambda_function_unavailable() -> NoReturn:
        pytest.fail(
            "the lambda_function fixture needs pytest-asyncio; "
            "install it with: pip install 'statefulrt[test]'",
            pytrace=False,
        )

else:

    @pytest_asyncio.fixture(name="lambda_function")
    async def _lambda_function() -> AsyncIterator[LambdaFunctionFactory]:
        from .emulator import Emulator

        started: list[Emulator] = []

        async def start(
            handler: str,
            *,
            cwd: str | os.PathLike[str] | None = None,
            env: Mapping[str, str] | None = None,
            timeout: float = 3.0,  # noqa: ASYNC109
            freeze: bool | None = None,
            extensions_dir: str | os.PathLike[str] | None = None,
            max_concurrency: int | None = None,
            snap_start: bool = False,
            **options: Any,
        ) -> Emulator:
            if freeze is None:
                freeze = max_concurrency is None
            emulator = Emulator(
                [sys.executable, "-m", "statefulrt", handler],
                cwd=cwd,
                env=env,
                timeout=timeout,
                freeze=freeze,
                extensions_dir=extensions_dir,
                handler=handler,
                max_concurrency=max_concurrency,
                snap_start=snap_start,
                **options,
            )
            await emulator.start()
            started.append(emulator)
            return emulator

        try:
            yield start
        finally:
            # Newest first; each close waits for its own shutdown phase.
            for emulator in reversed(started):
                await emulator.close()
