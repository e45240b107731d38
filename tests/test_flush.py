"""Flush policies and the all-or-nothing flush, through the running loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_api_fake import FakeRuntimeApi
from runtime_harness import running

from statefulrt import Context, Flush, FlushPolicy, State, StatefulHandler, flush_hook
from statefulrt._flush import Flusher


class Recorder(StatefulHandler):
    flush_policy = FlushPolicy(every=3)

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = []
        self.fail_times = 0
        self.api: FakeRuntimeApi | None = None
        self.answered_before_flush: list[bool] = []

    async def init(self) -> None:
        self.log.append(("init", None))

    async def handle(self, event: Any, context: Context) -> Any:
        self.state.buffer("events").append(event["n"])
        return {"pending": len(self.state.buffer("events"))}

    async def flush(self, batch: Flush) -> None:
        if self.api is not None:
            self.answered_before_flush.append(len(self.api.answers))
        if self.fail_times > 0:
            self.fail_times -= 1
            raise OSError("sink is down")
        # the name is the epoch joined to this state's writer id
        assert batch.name == f"{batch.epoch:010d}-{batch.writer}"
        self.log.append(("flush", (batch.epoch, batch.name[:10], batch.reason)))

    @flush_hook
    async def manifest(self, batch: Flush) -> None:
        self.log.append(("manifest", batch.items("events")))

    async def close(self) -> None:
        self.log.append(("close", None))


async def _send(api: FakeRuntimeApi, numbers: range) -> list[Any]:
    return [(await api.answer(api.push({"n": n}))).json() for n in numbers]


async def test_flush_every_n_runs_after_the_response(api: FakeRuntimeApi) -> None:
    handler = Recorder()
    handler.api = api
    async with running(api, handler):
        answers = await _send(api, range(1, 7))
        await asyncio.sleep(0.05)
    assert answers == [{"pending": n} for n in (1, 2, 3, 1, 2, 3)]
    assert handler.log == [
        ("init", None),
        ("flush", (1, "0000000001", "items")),
        ("manifest", [1, 2, 3]),
        ("flush", (2, "0000000002", "items")),
        ("manifest", [4, 5, 6]),
        ("close", None),
    ]
    # the third and sixth responses were posted before their flush started
    assert handler.answered_before_flush == [3, 6]


async def test_flush_failure_keeps_items_and_retries_same_epoch(
    api: FakeRuntimeApi,
) -> None:
    handler = Recorder()
    handler.fail_times = 1
    async with running(api, handler) as runtime:
        await _send(api, range(1, 4))  # flush 1 fails
        flusher = runtime.flusher
        assert flusher is not None
        for _ in range(100):  # the flush runs after the answer
            if flusher.failures:
                break
            await asyncio.sleep(0.01)
        assert len(handler.state.buffer("events")) == 3
        assert flusher.retry_pending
        await asyncio.sleep(0.15)  # past the first retry delay
        await _send(api, range(4, 5))  # boundary: the retry takes 1..3 only
        for _ in range(100):
            if not flusher.retry_pending:
                break
            await asyncio.sleep(0.01)
        assert handler.state.buffer("events").peek() == [4]
    assert handler.log[1:4] == [
        ("flush", (1, "0000000001", "items")),
        ("manifest", [1, 2, 3]),
        ("flush", (2, "0000000002", "shutdown")),
    ]
    assert handler.log[4] == ("manifest", [4])


async def test_flush_on_shutdown_flushes_the_tail_then_closes(
    api: FakeRuntimeApi,
) -> None:
    handler = Recorder()
    async with running(api, handler):
        await _send(api, range(1, 3))
    assert handler.log == [
        ("init", None),
        ("flush", (1, "0000000001", "shutdown")),
        ("manifest", [1, 2]),
        ("close", None),
    ]
    assert len(handler.state.buffer("events")) == 0


async def test_flush_hook_sys_exit_fails_flush_not_runtime(
    api: FakeRuntimeApi,
) -> None:
    class Exiting(StatefulHandler):
        flush_policy = FlushPolicy(every=1, on_shutdown=False)

        async def handle(self, event: Any, context: Context) -> Any:
            self.state.buffer("b").append(event)
            return "ok"

        async def flush(self, batch: Flush) -> None:
            raise SystemExit(1)

    handler = Exiting()
    async with running(api, handler):
        assert await _send(api, range(2)) == ["ok", "ok"]
    assert len(handler.state.buffer("b")) == 2


def test_flush_policy_due_reasons() -> None:
    state = State()
    policy = FlushPolicy(every=3, max_bytes=10, max_age=5.0)
    buffer = state.buffer("b")
    assert policy.due(state) is None
    buffer.append(b"12345")
    assert policy.due(state) is None
    buffer.append(b"123456")
    assert policy.due(state) == "bytes"
    state2 = State()
    state2.buffer("x").append("a")
    state2.buffer("y").append("b")
    state2.buffer("y").append("c")
    assert FlushPolicy(every=3).due(state2) == "items"
    state3 = State()
    state3.buffer("x").append("a")
    now = state3.buffer("x").oldest_age(0.0)
    assert now is not None
    born = -now  # the monotonic time the item arrived
    assert FlushPolicy(max_age=5.0).due(state3, born + 4.9) is None
    assert FlushPolicy(max_age=5.0).due(state3, born + 5.0) == "age"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "FlushPolicy every must be >= 1 item, not 0"),
        ({"max_bytes": -1}, "FlushPolicy max_bytes must be >= 1 byte, not -1"),
        ({"max_age": 0}, "FlushPolicy max_age must be > 0 seconds, not 0"),
    ],
)
def test_flush_policy_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        FlushPolicy(**kwargs)
    assert str(caught.value) == message


async def test_flusher_retry_waits_for_backoff() -> None:
    state = State()
    attempts: list[int] = []

    async def hook(batch: Flush) -> None:
        attempts.append(batch.attempt)
        if len(attempts) < 3:
            raise OSError("down")

    flusher = Flusher(state, FlushPolicy(every=1), [hook])
    state.buffer("b").append("x")
    assert await flusher.at_boundary(now=0.0) is False
    assert await flusher.at_boundary(now=0.0) is None  # still backing off
    assert flusher.failures == 1
    assert await flusher.flush() is False  # an explicit flush retries at once
    assert await flusher.flush() is True
    assert attempts == [1, 2, 3]
    assert flusher.epoch == 1
    assert len(state.buffer("b")) == 0


async def test_flusher_items_added_during_retry_wait_go_to_next_epoch() -> None:
    state = State()
    taken: list[tuple[int, list[Any]]] = []
    fail = [True]

    async def hook(batch: Flush) -> None:
        if fail[0]:
            fail[0] = False
            raise OSError("down")
        taken.append((batch.epoch, batch.items("b")))

    flusher = Flusher(state, FlushPolicy(every=2), [hook])
    state.buffer("b").extend(["a", "b"])
    assert await flusher.flush("items") is False
    state.buffer("b").append("c")
    assert await flusher.flush() is True
    assert await flusher.flush() is True
    assert taken == [(1, ["a", "b"]), (2, ["c"])]


def test_flush_hook_requires_coroutine() -> None:
    def plain(self: Any, batch: Flush) -> None:
        return None

    with pytest.raises(TypeError, match="@flush_hook needs an 'async def' method"):
        flush_hook(plain)  # type: ignore[type-var]


def test_stateful_handler_rejects_bad_class_settings() -> None:
    with pytest.raises(TypeError, match="flush_policy must be a FlushPolicy"):

        class BadPolicy(StatefulHandler):
            flush_policy = 3  # type: ignore[assignment]

    with pytest.raises(ValueError, match="durability must be 'memory', 'journal'"):

        class BadDurability(StatefulHandler):
            durability = "disk"  # type: ignore[assignment]


def test_flush_hooks_order_follows_definition_and_bases() -> None:
    class Base(StatefulHandler):
        @flush_hook
        async def first(self, batch: Flush) -> None: ...

    class Child(Base):
        async def flush(self, batch: Flush) -> None: ...

        @flush_hook
        async def second(self, batch: Flush) -> None: ...

        @flush_hook
        async def third(self, batch: Flush) -> None: ...

    names = [hook.__name__ for hook in Child().flush_hooks()]
    assert names == ["flush", "first", "second", "third"]
    assert [h.__name__ for h in Base().flush_hooks()] == ["first"]
