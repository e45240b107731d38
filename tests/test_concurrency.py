"""Managed Instances: several invocations at once in one process and loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from runtime_api_fake import FakeRuntimeApi
from runtime_harness import running

from statefulrt import Context, StatefulHandler


class Gauge:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


async def test_concurrency_async_handlers_share_one_state(api: FakeRuntimeApi) -> None:
    gauge = Gauge()

    class Shared(StatefulHandler):
        async def handle(self, event: Any, context: Context) -> Any:
            gauge.enter()
            await asyncio.sleep(0.05)
            gauge.leave()
            return self.state.counter("served").incr()

    handler = Shared()
    async with running(api, handler, max_concurrency=4):
        ids = [api.push({"n": n}) for n in range(12)]
        answers = [(await api.answer(rid)).json() for rid in ids]

    assert gauge.peak == 4
    assert sorted(answers) == list(range(1, 13))
    assert handler.state.counter("served").value == 12
    assert api.duplicate_answers == []


async def test_concurrency_sync_handlers_run_in_a_thread_pool(
    api: FakeRuntimeApi,
) -> None:
    gauge = Gauge()
    threads: set[str] = set()

    def handler(event: Any, context: Context) -> Any:
        gauge.enter()
        threads.add(threading.current_thread().name)
        time.sleep(0.05)
        gauge.leave()
        return context.aws_request_id

    async with running(api, handler, max_concurrency=3):
        ids = [api.push({}) for _ in range(9)]
        answers = [(await api.answer(rid)).json() for rid in ids]

    assert answers == ids  # each got its own request id back
    assert gauge.peak == 3
    assert all(name.startswith("statefulrt-handler") for name in threads)


async def test_concurrency_leaves_trace_variable_alone(api: FakeRuntimeApi) -> None:
    environ: dict[str, str] = {}

    async def handler(event: Any, context: Context) -> Any:
        return [environ.get("_X_AMZN_TRACE_ID"), context.trace_id]

    async with running(api, handler, environ=environ, max_concurrency=2):
        rid = api.push({}, headers={"Lambda-Runtime-Trace-Id": "Root=1-abc"})
        assert (await api.answer(rid)).json() == [None, "Root=1-abc"]


async def test_concurrency_late_answer_is_logged_not_fatal(
    api: FakeRuntimeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="statefulrt")

    async def handler(event: Any, context: Context) -> Any:
        return "late" if event.get("late") else "fine"

    async with running(api, handler, max_concurrency=2):
        late = api.push({"late": True})
        api.gone.add(late)
        await api.answer(late)
        assert (await api.answer(api.push({}))).json() == "fine"
    assert any(" was refused with 410: " in r.getMessage() for r in caplog.records)
