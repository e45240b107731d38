"""SnapStart: hooks in Lambda's order, unsafe resources closed and reopened."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import snapshot_restore_py
from runtime_api_fake import FakeRuntimeApi
from runtime_harness import make_config

from statefulrt import Context, StatefulHandler
from statefulrt._client import RuntimeApiClient
from statefulrt._runtime import Runtime


@pytest.fixture(autouse=True)
def _empty_registry() -> Iterator[None]:
    snapshot_restore_py.get_before_snapshot().clear()
    snapshot_restore_py.get_after_restore().clear()
    yield
    snapshot_restore_py.get_before_snapshot().clear()
    snapshot_restore_py.get_after_restore().clear()


class Connection:
    snapshot_safe = False

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def open(self) -> None:
        self.log.append("open connection")

    async def validate(self) -> bool:
        return True

    async def close(self) -> None:
        self.log.append("close connection")


def _handler(log: list[str], fail: str | None = None) -> StatefulHandler:
    class Snappy(StatefulHandler):
        async def init(self) -> None:
            await self.resources.open("db", Connection(log))

        async def before_snapshot(self) -> None:
            log.append("handler before")
            if fail == "before":
                raise RuntimeError("cannot quiesce")

        async def after_restore(self) -> None:
            log.append("handler after")
            if fail == "after":
                raise RuntimeError("cannot reconnect")

        async def handle(self, event: Any, context: Context) -> Any:
            return "served"

    return Snappy()


async def _start(api: FakeRuntimeApi, handler: StatefulHandler) -> asyncio.Task[int]:
    config = make_config(api, initialization_type="snap-start")
    runtime = Runtime(
        config,
        client=RuntimeApiClient(config.runtime_api, backoff=0.01),
        handler=handler,
        install_signals=False,
    )
    task = asyncio.create_task(runtime.run())
    task.runtime = runtime  # type: ignore[attr-defined]
    return task


async def test_snapstart_hooks_run_in_lambda_order(api: FakeRuntimeApi) -> None:
    log: list[str] = []
    for n in (1, 2):
        snapshot_restore_py.register_before_snapshot(log.append, f"registry before {n}")
        snapshot_restore_py.register_after_restore(log.append, f"registry after {n}")

    task = await _start(api, _handler(log))
    answer = await api.answer(api.push({}))
    task.runtime.request_shutdown()  # type: ignore[attr-defined]
    assert await asyncio.wait_for(task, 10) == 0

    assert answer.json() == "served"
    assert api.restores == 1
    assert log == [
        "open connection",
        "registry before 2",
        "registry before 1",
        "handler before",
        "close connection",
        "open connection",
        "handler after",
        "registry after 1",
        "registry after 2",
        "close connection",
    ]


async def test_snapstart_before_failure_is_an_init_error(api: FakeRuntimeApi) -> None:
    task = await _start(api, _handler([], fail="before"))
    assert await asyncio.wait_for(task, 10) == 64
    body = api.init_errors[0].json()
    assert (body["errorType"], body["errorMessage"]) == (
        "Runtime.BeforeSnapshotError",
        "cannot quiesce",
    )
    assert api.restores == 0


async def test_snapstart_after_failure_is_a_restore_error(api: FakeRuntimeApi) -> None:
    task = await _start(api, _handler([], fail="after"))
    assert await asyncio.wait_for(task, 10) == 65
    body = api.restore_errors[0].json()
    assert (body["errorType"], body["errorMessage"]) == (
        "Runtime.AfterRestoreError",
        "cannot reconnect",
    )
    assert api.restore_errors[0].headers["Lambda-Runtime-Function-Error-Type"] == (
        "Runtime.AfterRestoreError"
    )
    assert api.next_calls == 0
