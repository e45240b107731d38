from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_api_fake import FakeRuntimeApi
from runtime_harness import running

from statefulrt import Context, Resources, StatefulHandler


class Probe:
    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name
        self.healthy = True

    async def open(self) -> None:
        self.log.append(f"open {self.name}")
        self.healthy = True

    async def validate(self) -> bool:
        self.log.append(f"validate {self.name}")
        return self.healthy

    async def close(self) -> None:
        self.log.append(f"close {self.name}")


async def test_resources_validated_only_after_long_idle() -> None:
    log: list[str] = []
    resources = Resources(revalidate_after=5.0)
    db = await resources.open("db", Probe(log, "db"))
    await resources.open("cache", Probe(log, "cache"))
    resources.after_invoke(now=100.0)

    await resources.before_invoke(now=104.9)  # a short freeze: trust them
    resources.after_invoke(now=105.0)
    db.healthy = False  # the server dropped the connection while frozen
    await resources.before_invoke(now=111.0)
    await resources.close()

    assert log == [
        "open db",
        "open cache",
        "validate db",
        "close db",
        "open db",
        "validate cache",
        "close cache",
        "close db",
    ]
    assert resources.reopened == 1


async def test_resources_refuse_duplicates_and_non_resources() -> None:
    resources = Resources()
    await resources.open("db", Probe([], "db"))
    with pytest.raises(ValueError, match="a resource named 'db' is already open"):
        await resources.open("db", Probe([], "db"))
    with pytest.raises(TypeError, match="resource 'x' must have async open()"):
        await resources.open("x", object())  # type: ignore[type-var]
    with pytest.raises(KeyError, match="no resource named 'nope'"):
        resources["nope"]


async def test_resources_reach_handler_through_context_and_close_at_shutdown(
    api: FakeRuntimeApi,
) -> None:
    log: list[str] = []

    class WithDb(StatefulHandler):
        async def init(self) -> None:
            await self.resources.open("db", Probe(log, "db"))

        async def handle(self, event: Any, context: Context) -> Any:
            assert context.resources is self.resources
            return context.resources["db"].name

        async def close(self) -> None:
            log.append("handler close")

    async with running(api, WithDb()):
        assert (await api.answer(api.push({}))).json() == "db"
    assert log == ["open db", "handler close", "close db"]


async def test_resources_failed_reopen_fails_the_invocation_not_the_runtime(
    api: FakeRuntimeApi,
) -> None:
    log: list[str] = []
    probe = Probe(log, "db")
    refuse = [True]

    class Flaky(StatefulHandler):
        async def init(self) -> None:
            self.resources.revalidate_after = 0.0  # check before every invocation
            await self.resources.open("db", probe)

        async def handle(self, event: Any, context: Context) -> Any:
            return "served"

    async def open_fails() -> None:
        if refuse[0]:
            raise ConnectionRefusedError("database restarting")
        log.append("reopened")
        probe.healthy = True

    async with running(api, Flaky()):
        assert (await api.answer(api.push({}))).json() == "served"
        probe.healthy = False
        probe.open = open_fails  # type: ignore[method-assign]
        failed = (await api.answer(api.push({}))).json()
        refuse[0] = False
        assert (await api.answer(api.push({}))).json() == "served"

    assert failed["errorType"] == "Runtime.ResourceUnavailable"
    assert failed["errorMessage"] == (
        "resource 'db' could not be reopened: "
        "ConnectionRefusedError: database restarting"
    )
    assert "reopened" in log


async def test_resources_idle_time_starts_before_the_answer_goes_out(
    api: FakeRuntimeApi,
) -> None:
    # Once the answer (and with it, pipelined, the next poll) has gone out,
    # Lambda may freeze the sandbox: the idle clock must already be running,
    # or the next thaw would look like no idle time at all.
    idle_at_answer: list[float] = []

    class Slow(StatefulHandler):
        async def init(self) -> None:
            await self.resources.open("db", Probe([], "db"))

        async def handle(self, event: Any, context: Context) -> Any:
            await asyncio.sleep(0.3)
            return "done"

    handler = Slow()
    async with running(api, handler) as runtime:
        post = runtime.client.post_response

        async def recording(*args: Any, **kwargs: Any) -> bool:
            idle_at_answer.append(handler.resources.idle_seconds())
            return await post(*args, **kwargs)

        runtime.client.post_response = recording  # type: ignore[method-assign]
        assert (await api.answer(api.push({}))).json() == "done"
    assert idle_at_answer[0] < 0.1
