"""``Emulator``: the two servers, the sandbox between them, and a client."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web

from ._config import INIT_TIMEOUT, VERSION, FunctionConfig
from ._eventstream import INVOKE_COMPLETE, PAYLOAD_CHUNK, EventStreamDecoder
from ._extensions_api import add_extension_routes
from ._invoke import INVOKE_PATH, STREAM_PATH, add_invoke_routes, encode_client_context
from ._logging import logger
from ._report import STDERR, Report, Reporter, StreamChoice
from ._runtime_api import add_runtime_routes
from ._sandbox import Sandbox
from ._server import HttpServer, Router
from ._shutdown import Shutdown, ShutdownReason

__all__ = ["Emulator", "InvokeResult", "InvokeStream"]

# Runners wait this long for in-flight handlers at close; by then the sandbox
# has answered every caller and released every poll, so it is only a bound.
_SHUTDOWN_TIMEOUT: Final = 2.0
_RAW_BODY_LIMIT: Final = 1024 * 1024


@dataclass(frozen=True)
class InvokeResult:
    """What a caller of the invoke endpoint got back."""

    status: int
    payload: bytes
    function_error: str | None
    request_id: str

    def json(self) -> Any:
        """The payload parsed as JSON (raises ``orjson.JSONDecodeError`` if not)."""
        return orjson.loads(self.payload)


class InvokeStream:
    """An ``InvokeWithResponseStream`` answer, read as it arrives.

    Iterate it for the function's bytes, piece by piece, as the runtime sends
    them. Once iteration is over, ``error_code`` and ``error_details`` hold
    what the closing ``InvokeComplete`` event reported (``None`` when the
    stream completed), and ``complete`` says whether that event came at all.
    A call refused before the function ran (``status`` other than 200) has no
    pieces: its error type and body are in the same two fields.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.request_id = response.headers.get("X-Amzn-RequestId", "")
        self.content_type = response.headers.get("Content-Type", "")
        self.function_error = response.headers.get("X-Amz-Function-Error")
        self.error_code: str | None = None
        self.error_details: str | None = None
        self.complete = False

    def error(self) -> Any:
        """``error_details`` parsed as JSON (the error document), or None."""
        return None if self.error_details is None else orjson.loads(self.error_details)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.status != 200:
            self.error_code = self._response.headers.get("X-Amzn-ErrorType")
            self.error_details = (await self._response.read()).decode()
            return
        decoder = EventStreamDecoder()
        async for data in self._response.content.iter_any():
            for event in decoder.feed(data):
                if event.event_type == PAYLOAD_CHUNK:
                    yield event.payload
                elif event.event_type == INVOKE_COMPLETE:
                    self._complete(orjson.loads(event.payload or b"{}"))

    def _complete(self, body: dict[str, str]) -> None:
        self.complete = True
        self.error_code = body.get("ErrorCode") or None
        self.error_details = body.get("ErrorDetails") if self.error_code else None


def _loopback_for(host: str) -> str:
    """Where the Runtime API listens: ``host``, unless ``host`` is a wildcard.

    The Runtime API has no authentication and only the local runtime needs
    it, so exposing the invoke endpoint on all interfaces must not expose it.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if not address.is_unspecified:
        return host
    return "::1" if address.version == 6 else "127.0.0.1"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Emulator:
    """The Lambda service on loopback: invoke endpoint, Runtime API, supervisor.

    ``command`` starts the runtime (it is started at the first invoke, cold,
    and again after every reset). ``timeout`` is the function timeout in
    seconds; ``init_timeout`` bounds an init the way Lambda's ten seconds do.
    START/END/REPORT lines go to ``report_stream`` (``sys.stderr`` as it is
    when each line is written, by default; ``None`` for silence).

    ``extensions_dir`` plays ``/opt/extensions``: every executable file in it
    is launched, as an external extension, at each init. ``freeze`` stops the
    environment's processes between invocations, as Lambda does.
    ``idle_shutdown`` spins the environment down after that many idle seconds
    (the next invoke starts cold). The Extensions API is always served; a
    runtime that registers an extension gets SIGTERM at shutdown, one that
    does not gets SIGKILL, as on Lambda.

    ``max_concurrency`` makes it a Managed Instances function: the runtime
    may keep that many ``/next`` polls open, each invocation goes to an idle
    one (``Runtime.Unavailable`` at once when none is), invocations overlap,
    nothing freezes, and a timeout fails its caller without stopping the
    runtime. ``snap_start`` makes every environment a SnapStart one, restored
    right after its init (``/restore/next``); its first REPORT shows the
    restore duration.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 3.0,
        memory_mb: int = 128,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        function_name: str = "function",
        handler: str | None = None,
        report_stream: StreamChoice = STDERR,
        init_timeout: float = INIT_TIMEOUT,
        extensions_dir: str | os.PathLike[str] | None = None,
        freeze: bool = False,
        idle_shutdown: float | None = None,
        max_concurrency: int | None = None,
        snap_start: bool = False,
    ) -> None:
        if extensions_dir is not None and not os.path.isdir(extensions_dir):
            message = f"extensions_dir {os.fspath(extensions_dir)!r} is not a directory"
            raise ValueError(message)
        if idle_shutdown is not None and not idle_shutdown > 0:
            message = f"idle_shutdown must be a positive number, got {idle_shutdown}"
            raise ValueError(message)
        config = FunctionConfig(
            name=function_name,
            memory_mb=memory_mb,
            timeout=timeout,
            handler=handler,
            task_root=os.path.abspath(os.fspath(cwd) if cwd is not None else "."),
            env=dict(env or {}),
            init_timeout=init_timeout,
            max_concurrency=max_concurrency,
            snap_start=snap_start,
        )
        self._config = config
        self._host = host
        self._port = port
        self._reporter = Reporter(report_stream, VERSION)
        self._sandbox = Sandbox(
            command,
            config,
            self._reporter,
            extensions_dir=(
                None if extensions_dir is None else os.path.abspath(extensions_dir)
            ),
            freeze=freeze,
            idle_shutdown=idle_shutdown,
        )

        self._invoke_runner: web.AppRunner | None = None
        self._runtime_server: HttpServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: str | None = None
        self._runtime_api: str | None = None

    # -- what callers look at ---------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` of the invoke endpoint."""
        if self._url is None:
            raise RuntimeError("the emulator is not started; await start() first")
        return self._url

    @property
    def runtime_api(self) -> str:
        """``host:port`` handed to the runtime as ``AWS_LAMBDA_RUNTIME_API``."""
        if self._runtime_api is None:
            raise RuntimeError("the emulator is not started; await start() first")
        return self._runtime_api

    @property
    def reports(self) -> list[Report]:
        return self._reporter.reports

    @property
    def pid(self) -> int | None:
        return self._sandbox.pid

    @property
    def starts(self) -> int:
        return self._sandbox.starts

    @property
    def tmpdir(self) -> str | None:
        """The environment's temporary directory (its ``TMPDIR``), if one exists.

        It survives resets (timeouts, crashes), like ``/tmp`` on Lambda, and
        is removed when the environment spins down or the emulator closes.
        """
        return self._sandbox.tmpdir

    @property
    def shutdowns(self) -> list[Shutdown]:
        """Every environment's end so far: ``(reason, signal, exit_code)``."""
        return self._sandbox.shutdowns

    @property
    def idle_pollers(self) -> int:
        """How many runtime ``/next`` polls are waiting for an event now."""
        return self._sandbox.idle_pollers

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind both servers; the runtime itself starts at the first invoke."""
        if self._invoke_runner is not None:
            raise RuntimeError("the emulator is already started")
        try:
            # The Runtime API first: its address goes into the runtime's env.
            router = Router()
            sandbox = self._sandbox
            add_runtime_routes(
                router,
                sandbox.slot,
                self._config.arn,
                snap_start=self._config.snap_start,
            )
            add_extension_routes(router, lambda: sandbox.extensions)
            self._runtime_server = HttpServer(router)
            host, port = await self._runtime_server.start(_loopback_for(self._host), 0)
            self._runtime_api = _host_port(host, port)

            invoke_app = web.Application()
            add_invoke_routes(invoke_app, self._sandbox, self._config.name)
            self._invoke_runner = await _serve(invoke_app, self._host, self._port)
            host, port = _bound(self._invoke_runner)
            self._url = f"http://{_host_port(host, port)}"

            self._sandbox.start(self._runtime_api)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None)
            )
        except BaseException:
            await self.close()
            raise
        logger.info(
            "emulator listening: invoke %s, Runtime API %s",
            self._url,
            self._runtime_api,
        )

    async def close(self) -> None:
        """Spin the environment down, answer waiting callers, stop both servers."""
        await self._sandbox.close()
        if self._invoke_runner is not None:
            await self._invoke_runner.cleanup()
        if self._runtime_server is not None:
            await self._runtime_server.close()
        self._invoke_runner = self._runtime_server = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_idle(self) -> None:
        """Wait until every invocation sent so far has finished.

        A caller gets its answer as soon as the runtime posts it; the
        invocation (and its REPORT) ends only when the runtime polls again.
        Await this before looking at ``reports``.
        """
        await self._sandbox.wait_idle()

    async def wait_pollers(self, count: int) -> None:
        """Wait until ``count`` runtime pollers wait for an event at once.

        Managed Instances only: init ends at the first poller's ``/next``,
        and a burst of invocations sent before the others have polled meets
        ``Runtime.Unavailable``. Bound it with ``asyncio.timeout``.
        """
        await self._sandbox.wait_pollers(count)

    # -- testing controls ----------------------------------------------------

    async def idle(self, seconds: float) -> None:
        """Let the environment sit idle (frozen, if ``freeze``) for ``seconds``."""
        await self._sandbox.wait_idle()
        await asyncio.sleep(seconds)

    async def force_timeout(self) -> None:
        """Reset as a timeout does: the runtime goes, extensions get SHUTDOWN
        with reason ``timeout``, and the next invoke starts cold.

        An invocation in flight times out at once; otherwise the idle
        environment is reset. Under Managed Instances every invocation in
        flight times out and the runtime stays, as there.
        """
        await self._sandbox.force_timeout()

    async def shutdown(
        self, reason: ShutdownReason = "spindown", budget_ms: float | None = None
    ) -> None:
        """End the environment through Lambda's shutdown phase.

        Queued invocations finish first. ``budget_ms`` replaces the platform's
        budget (``None``: 500 ms with internal extensions only, 2,000 ms with
        an external one); with no extension registered the runtime gets
        SIGKILL at once. The next invoke starts cold.
        """
        await self._sandbox.shutdown(reason, budget_ms)

    async def kill(self) -> None:
        """SIGKILL the runtime now, like a crash; the environment resets with
        reason ``failure``."""
        await self._sandbox.kill()

    async def restart(self) -> None:
        """Replace the environment by a fresh one and wait until its init is done.

        Raises ``RuntimeError`` when the new init fails.
        """
        await self._sandbox.restart()

    # -- the client --------------------------------------------------------

    async def invoke(
        self,
        event: bytes | str | object = b"{}",
        *,
        client_context: Mapping[str, Any] | None = None,
        tenant_id: str | None = None,
        trace_id: str | None = None,
    ) -> InvokeResult:
        """Invoke the function over real HTTP, like any external caller.

        ``bytes`` are sent as they are, ``str`` as UTF-8, anything else as JSON.
        """
        session = self._client()
        data, headers = _request(event, client_context, tenant_id, trace_id)
        async with session.post(
            self.url + INVOKE_PATH, data=data, headers=headers
        ) as response:
            payload = await response.read()
            return InvokeResult(
                status=response.status,
                payload=payload,
                function_error=response.headers.get("X-Amz-Function-Error"),
                request_id=response.headers.get("X-Amzn-RequestId", ""),
            )

    @asynccontextmanager
    async def invoke_stream(
        self,
        event: bytes | str | object = b"{}",
        *,
        client_context: Mapping[str, Any] | None = None,
        tenant_id: str | None = None,
        trace_id: str | None = None,
    ) -> AsyncIterator[InvokeStream]:
        """Invoke through ``InvokeWithResponseStream`` and read as it streams::

        async with emulator.invoke_stream({"n": 3}) as response:
            async for piece in response:
                ...
        assert response.error_code is None
        """
        session = self._client()
        data, headers = _request(event, client_context, tenant_id, trace_id)
        async with session.post(
            self.url + STREAM_PATH, data=data, headers=headers
        ) as response:
            yield InvokeStream(response)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the emulator is not started; await start() first")
        return self._session


def _request(
    event: bytes | str | object,
    client_context: Mapping[str, Any] | None,
    tenant_id: str | None,
    trace_id: str | None,
) -> tuple[bytes | io.BytesIO, dict[str, str]]:
    """The body and headers of an invoke request for ``event``."""
    if isinstance(event, bytes):
        body = event
    elif isinstance(event, str):
        body = event.encode("utf-8")
    else:
        body = orjson.dumps(event)

    headers = {"Content-Type": "application/json"}
    if client_context is not None:
        headers["X-Amz-Client-Context"] = encode_client_context(client_context)
    if tenant_id is not None:
        headers["X-Amz-Tenant-Id"] = tenant_id
    if trace_id is not None:
        headers["X-Amzn-Trace-Id"] = trace_id

    # aiohttp warns (ResourceWarning) about raw bodies over 1 MiB; a file
    # object is streamed instead, and 6 MB events are legitimate here.
    data = io.BytesIO(body) if len(body) > _RAW_BODY_LIMIT else body
    return data, headers


async def _serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    # handler_cancellation: a caller that hangs up stops reading the stream
    # meant for it.
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def _bound(runner: web.AppRunner) -> tuple[str, int]:
    host, port = runner.addresses[0][:2]
    return str(host), int(port)
