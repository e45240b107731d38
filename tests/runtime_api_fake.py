"""A scriptable Runtime API on loopback, for tests of the runtime in-process.

It serves ``next``, ``response``, ``error`` and ``init/error`` over real HTTP,
hands out queued events and records every answer.  Faults can be injected:
dropping connections, refusing ``next``.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

BASE = "/2018-06-01/runtime"


@dataclass
class Answer:
    kind: str  # "response" | "error"
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class FakeRuntimeApi:
    events: asyncio.Queue[tuple[dict[str, str], bytes]] = field(
        default_factory=asyncio.Queue
    )
    answers: dict[str, Answer] = field(default_factory=dict)
    duplicate_answers: list[str] = field(default_factory=list)
    init_errors: list[Answer] = field(default_factory=list)
    restore_errors: list[Answer] = field(default_factory=list)
    restores: int = 0
    gone: set[str] = field(default_factory=set)  # ids answered 410 (timed out)
    next_calls: int = 0
    drop_next: int = 0  # close this many `next` connections without answering
    fail_next_status: int | None = None
    user_agents: set[str] = field(default_factory=set)
    _waiters: dict[str, asyncio.Future[Answer]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _runner: web.AppRunner | None = None
    address: str = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(f"{BASE}/invocation/next", self._next)
        app.router.add_post(f"{BASE}/invocation/{{rid}}/response", self._response)
        app.router.add_post(f"{BASE}/invocation/{{rid}}/error", self._error)
        app.router.add_post(f"{BASE}/init/error", self._init_error)
        app.router.add_get(f"{BASE}/restore/next", self._restore_next)
        app.router.add_post(f"{BASE}/restore/error", self._restore_error)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.address = f"127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def push(
        self,
        event: Any = None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        deadline_in_ms: int = 30_000,
    ) -> str:
        """Queue an event; returns its request id."""
        import time

        request_id = f"req-{next(self._ids):04d}"
        base = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + deadline_in_ms),
            "Lambda-Runtime-Invoked-Function-Arn": (
                "arn:aws:lambda:us-east-1:012345678912:function:test"
            ),
            "Content-Type": "application/json",
        }
        base.update(headers or {})
        if "Lambda-Runtime-Aws-Request-Id" not in base:
            request_id = ""
        payload = body if body is not None else orjson.dumps(event)
        self.events.put_nowait((base, payload))
        return request_id

    async def answer(self, request_id: str, timeout: float = 10.0) -> Answer:
        if request_id in self.answers:
            return self.answers[request_id]
        waiter = self._waiters.setdefault(
            request_id, asyncio.get_running_loop().create_future()
        )
        return await asyncio.wait_for(waiter, timeout)

    async def _next(self, request: web.Request) -> web.StreamResponse:
        self.next_calls += 1
        self.user_agents.add(request.headers.get("User-Agent", ""))
        if self.drop_next > 0:
            self.drop_next -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if self.fail_next_status is not None:
            return web.json_response(
                {"errorMessage": "refused", "errorType": "InternalServerError"},
                status=self.fail_next_status,
            )
        headers, body = await self.events.get()
        transport = request.transport
        if transport is None or transport.is_closing():
            # The runtime that sent this `next` has gone (one that pipelines
            # stops with a `next` in flight): the event is for the next one.
            self.events.put_nowait((headers, body))
            return web.Response(status=500)
        return web.Response(body=body, headers=headers)

    async def _record(self, request: web.Request, kind: str) -> web.Response:
        rid = request.match_info["rid"]
        answer = Answer(kind, await request.read(), dict(request.headers))
        if rid in self.gone:
            self.answers[rid] = answer
            waiter = self._waiters.get(rid)
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)
            return web.json_response(
                {"errorMessage": "Invoke timeout", "errorType": "InvokeTimeout"},
                status=410,
            )
        if rid in self.answers:
            self.duplicate_answers.append(rid)
            return web.json_response(
                {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"},
                status=400,
            )
        self.answers[rid] = answer
        waiter = self._waiters.get(rid)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)
        return web.json_response({"status": "OK"}, status=202)

    async def _response(self, request: web.Request) -> web.Response:
        return await self._record(request, "response")

    async def _error(self, request: web.Request) -> web.Response:
        return await self._record(request, "error")

    async def _restore_next(self, request: web.Request) -> web.Response:
        self.restores += 1
        return web.Response(status=200)

    async def _restore_error(self, request: web.Request) -> web.Response:
        self.restore_errors.append(
            Answer("restore-error", await request.read(), dict(request.headers))
        )
        return web.json_response({"status": "OK"}, status=202)

    async def _init_error(self, request: web.Request) -> web.Response:
        self.init_errors.append(
            Answer("init-error", await request.read(), dict(request.headers))
        )
        return web.json_response({"status": "OK"}, status=202)
