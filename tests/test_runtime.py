"""The runtime loop, in-process, over real HTTP to a fake Runtime API."""

from __future__ import annotations

import asyncio
import decimal
import logging
import os
from typing import Any

import orjson
import pytest
from runtime_api_fake import FakeRuntimeApi
from runtime_harness import running

import statefulrt
from statefulrt import Context
from statefulrt._runtime import EXIT_API_FAILURE, EXIT_INIT_ERROR


async def test_runtime_sync_handler_result_and_context(api: FakeRuntimeApi) -> None:
    seen: list[dict[str, Any]] = []

    def handler(event: Any, context: Context) -> Any:
        seen.append(
            {
                "request_id": context.aws_request_id,
                "function_name": context.function_name,
                "version": context.function_version,
                "memory": context.memory_limit_in_mb,
                "arn": context.invoked_function_arn,
                "group": context.log_group_name,
                "stream": context.log_stream_name,
                "cold": context.is_cold,
                "index": context.invocation_index,
                "tenant": context.tenant_id,
                "identity": context.identity.cognito_identity_id,
                "client_context": context.client_context,
                "remaining_ok": 20_000
                < context.get_remaining_time_in_millis()
                <= 30_000,
            }
        )
        return {"echo": event}

    async with running(api, handler):
        first = api.push({"n": 1})
        second = api.push({"n": 2})
        assert (await api.answer(first)).json() == {"echo": {"n": 1}}
        assert (await api.answer(second)).json() == {"echo": {"n": 2}}

    assert seen[0] == {
        "request_id": first,
        "function_name": "test",
        "version": "$LATEST",
        "memory": "256",
        "arn": "arn:aws:lambda:us-east-1:012345678912:function:test",
        "group": "/aws/lambda/test",
        "stream": "2026/12/04/[$LATEST]abc",
        "cold": True,
        "index": 1,
        "tenant": None,
        "identity": None,
        "client_context": None,
        "remaining_ok": True,
    }
    assert (seen[1]["cold"], seen[1]["index"]) == (False, 2)


async def test_runtime_async_handler_result(api: FakeRuntimeApi) -> None:
    async def handler(event: Any, context: Context) -> Any:
        await asyncio.sleep(0)
        return [event["x"] * 2, None]

    async with running(api, handler):
        answer = await api.answer(api.push({"x": 21}))
    assert answer.kind == "response"
    assert answer.body == b"[42,null]"
    assert answer.headers["Content-Type"] == "application/json"


async def test_runtime_sync_handler_may_call_asyncio_run(api: FakeRuntimeApi) -> None:
    async def work() -> str:
        return "ran"

    def handler(event: Any, context: Context) -> Any:
        return asyncio.run(work())

    async with running(api, handler):
        answer = await api.answer(api.push({}))
    assert answer.json() == "ran"


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class Fatal(BaseException):
    pass


def _raiser(kind: str) -> Any:
    def handler(event: Any, context: Context) -> Any:
        if kind == "unicode":
            raise ValueError("naïve — ünïcode ✓")
        if kind == "badstr":
            raise BadStr()
        if kind == "chained":
            try:
                {}["k"]
            except KeyError as exc:
                raise RuntimeError("lookup failed") from exc
        if kind == "exit":
            raise SystemExit(3)
        if kind == "interrupt":
            raise KeyboardInterrupt
        if kind == "fatal":
            raise Fatal("deep")
        if kind == "surrogate":
            raise ValueError("bad \ud800 text")
        return "fine"

    return handler


@pytest.mark.parametrize(
    ("kind", "error_type", "message"),
    [
        ("unicode", "ValueError", "naïve — ünïcode ✓"),
        ("badstr", "BadStr", "<str() of BadStr raised RuntimeError>"),
        ("chained", "RuntimeError", "lookup failed"),
        ("exit", "SystemExit", "3"),
        ("interrupt", "KeyboardInterrupt", ""),
        ("fatal", "Fatal", "deep"),
        ("surrogate", "ValueError", "bad \\ud800 text"),
    ],
)
async def test_runtime_handler_exception_is_answered_and_loop_goes_on(
    api: FakeRuntimeApi, kind: str, error_type: str, message: str
) -> None:
    failing = _raiser(kind)
    calls = 0

    def handler(event: Any, context: Context) -> Any:
        nonlocal calls
        calls += 1
        return failing(event, context) if calls == 1 else "next one fine"

    async with running(api, handler):
        bad = api.push({})
        good = api.push({})
        error = await api.answer(bad)
        after = await api.answer(good)

    assert error.kind == "error"
    body = error.json()
    assert (body["errorType"], body["errorMessage"], body["requestId"]) == (
        error_type,
        message,
        bad,
    )
    assert error.headers["Lambda-Runtime-Function-Error-Type"] == error_type
    assert any("in handler" in line for line in body["stackTrace"])
    runtime_dir = os.path.dirname(statefulrt.__file__)
    assert not any(runtime_dir in line for line in body["stackTrace"])
    assert after.json() == "next one fine"
    assert api.duplicate_answers == []


async def test_runtime_chained_error_lists_the_cause(api: FakeRuntimeApi) -> None:
    async with running(api, _raiser("chained")):
        body = (await api.answer(api.push({}))).json()
    assert "KeyError: 'k'\n" in body["stackTrace"]
    assert (
        "The above exception was the direct cause of the following exception:\n"
        in body["stackTrace"]
    )


async def test_runtime_async_handler_base_exceptions_do_not_stop_loop(
    api: FakeRuntimeApi,
) -> None:
    calls = 0

    async def handler(event: Any, context: Context) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        if calls == 2:
            raise SystemExit("bye")
        if calls == 3:
            raise asyncio.CancelledError
        return calls

    async with running(api, handler):
        ids = [api.push({}) for _ in range(4)]
        answers = [await api.answer(rid) for rid in ids]
    assert [a.json().get("errorType") for a in answers[:3]] == [
        "KeyboardInterrupt",
        "SystemExit",
        "CancelledError",
    ]
    assert answers[3].json() == 4


async def test_runtime_event_not_json_is_unmarshal_error(api: FakeRuntimeApi) -> None:
    async with running(api, lambda event, context: "unreached"):
        bad = api.push(body=b"{not json")
        good = api.push({"ok": True})
        error = (await api.answer(bad)).json()
        assert (await api.answer(good)).json() == "unreached"
    assert error["errorType"] == "Runtime.UnmarshalError"
    assert error["errorMessage"].startswith("Unable to unmarshal input: ")
    assert error["requestId"] == bad


async def test_runtime_unserialisable_result_is_marshal_error(
    api: FakeRuntimeApi,
) -> None:
    async with running(api, lambda event, context: {1, 2}):
        error = (await api.answer(api.push({}))).json()
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"] == (
        "Unable to marshal response: Type is not JSON serializable: set"
    )


async def test_runtime_decimal_none_and_bytes_results(api: FakeRuntimeApi) -> None:
    results = iter([{"d": decimal.Decimal("1.10"), "n": None}, b"\x00raw", "text"])

    async with running(api, lambda event, context: next(results)):
        answers = [await api.answer(api.push({})) for _ in range(3)]
    assert answers[0].body == b'{"d":1.10,"n":null}'
    assert (answers[1].body, answers[1].headers["Content-Type"]) == (
        b"\x00raw",
        "application/unknown",
    )
    assert answers[2].body == b'"text"'


async def test_runtime_integers_beyond_64_bits_stay_exact(api: FakeRuntimeApi) -> None:
    async with running(api, lambda event, context: {"big": 2**70, "small": 1}):
        answer = await api.answer(api.push({}))
    assert answer.body == b'{"big":1180591620717411303424,"small":1}'


async def test_runtime_response_over_6mb_is_a_clear_error(api: FakeRuntimeApi) -> None:
    sizes = iter([7 * 1024 * 1024, 10])

    async with running(api, lambda event, context: "x" * next(sizes)):
        big = api.push({})
        small = api.push({})
        error = (await api.answer(big)).json()
        assert (await api.answer(small)).json() == "x" * 10
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert error["errorMessage"] == (
        "Response payload size (7340034 bytes) exceeded maximum allowed payload "
        "size (6291556 bytes)."
    )


async def test_runtime_malformed_context_headers_still_run_handler(
    api: FakeRuntimeApi, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Any] = []

    def handler(event: Any, context: Context) -> Any:
        seen.append((context.client_context, context.identity.cognito_identity_id))
        return "ok"

    caplog.set_level(logging.WARNING, logger="statefulrt")
    async with running(api, handler):
        rid = api.push(
            {},
            headers={
                "Lambda-Runtime-Client-Context": "{broken",
                "Lambda-Runtime-Cognito-Identity": "[1, 2]",
            },
        )
        assert (await api.answer(rid)).json() == "ok"
    assert seen == [(None, None)]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("lambda-runtime-client-context is not JSON" in w for w in warnings)
    assert any(
        "lambda-runtime-cognito-identity is not a JSON object" in w for w in warnings
    )


async def test_runtime_client_context_and_identity_are_parsed(
    api: FakeRuntimeApi,
) -> None:
    seen: list[Any] = []

    def handler(event: Any, context: Context) -> Any:
        cc = context.client_context
        assert cc is not None and cc.client is not None
        seen.append(
            (
                cc.client.installation_id,
                cc.client.app_title,
                cc.custom,
                cc.env,
                context.identity.cognito_identity_id,
                context.identity.cognito_identity_pool_id,
                context.tenant_id,
            )
        )
        return "ok"

    client_context = {
        "client": {"installation_id": "inst-1", "app_title": "Photos"},
        "custom": {"k": "v"},
        "env": {"locale": "fr"},
    }
    async with running(api, handler):
        rid = api.push(
            {},
            headers={
                "Lambda-Runtime-Client-Context": orjson.dumps(client_context).decode(),
                "Lambda-Runtime-Cognito-Identity": (
                    '{"cognitoIdentityId":"id-1","cognitoIdentityPoolId":"pool-1"}'
                ),
                "Lambda-Runtime-Aws-Tenant-Id": "tenant-a",
            },
        )
        await api.answer(rid)
    assert seen == [
        ("inst-1", "Photos", {"k": "v"}, {"locale": "fr"}, "id-1", "pool-1", "tenant-a")
    ]


@pytest.mark.parametrize("deadline", [None, "soon", "-5"])
async def test_runtime_missing_or_invalid_deadline_falls_back(
    api: FakeRuntimeApi, deadline: str | None
) -> None:
    remaining: list[int] = []

    def handler(event: Any, context: Context) -> Any:
        remaining.append(context.get_remaining_time_in_millis())
        return "ok"

    headers = {"Lambda-Runtime-Deadline-Ms": deadline} if deadline else {}
    async with running(api, handler):
        if deadline is None:
            # remove the header the fake adds by default
            rid = api.push({}, headers={"Lambda-Runtime-Deadline-Ms": ""})
        else:
            rid = api.push({}, headers=headers)
        assert (await api.answer(rid)).json() == "ok"
    assert 899_000 <= remaining[0] <= 900_000


async def test_context_remaining_time_is_never_negative(api: FakeRuntimeApi) -> None:
    remaining: list[int] = []

    def handler(event: Any, context: Context) -> Any:
        remaining.append(context.get_remaining_time_in_millis())
        return "ok"

    async with running(api, handler):
        await api.answer(api.push({}, deadline_in_ms=-5_000))
    assert remaining == [0]


async def test_runtime_trace_id_is_set_and_removed(api: FakeRuntimeApi) -> None:
    environ: dict[str, str] = {"_X_AMZN_TRACE_ID": "stale"}
    seen: list[str | None] = []

    def handler(event: Any, context: Context) -> Any:
        seen.append(environ.get("_X_AMZN_TRACE_ID"))
        return "ok"

    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    async with running(api, handler, environ=environ):
        await api.answer(api.push({}, headers={"Lambda-Runtime-Trace-Id": trace}))
        await api.answer(api.push({}))
    assert seen == [trace, None]


async def test_runtime_init_error_is_reported_and_exits(api: FakeRuntimeApi) -> None:
    from statefulrt import StatefulHandler

    class Broken(StatefulHandler):
        async def init(self) -> None:
            raise ConnectionError("database is down")

    async with running(api, Broken) as runtime:
        for _ in range(200):
            if api.init_errors:
                break
            await asyncio.sleep(0.01)
    assert runtime.invocations == 0
    body = api.init_errors[0].json()
    assert (body["errorType"], body["errorMessage"]) == (
        "ConnectionError",
        "database is down",
    )
    assert api.init_errors[0].headers["Lambda-Runtime-Function-Error-Type"] == (
        "ConnectionError"
    )
    assert api.next_calls == 0


async def test_runtime_run_returns_init_error_code(api: FakeRuntimeApi) -> None:
    from runtime_harness import make_config

    from statefulrt._runtime import Runtime

    runtime = Runtime(make_config(api, handler="nodot"), install_signals=False)
    assert await runtime.run() == EXIT_INIT_ERROR
    body = api.init_errors[0].json()
    assert body["errorType"] == "Runtime.MalformedHandlerName"
    assert body["errorMessage"] == (
        "Bad handler 'nodot': expected 'module.function', for example 'app.handler'"
    )


async def test_runtime_reconnects_after_dropped_connections(
    api: FakeRuntimeApi,
) -> None:
    api.drop_next = 3
    async with running(api, lambda event, context: "survived"):
        assert (await api.answer(api.push({}))).json() == "survived"
    assert api.next_calls >= 4


async def test_runtime_exits_after_repeated_connection_failures(
    api: FakeRuntimeApi, caplog: pytest.LogCaptureFixture
) -> None:
    from runtime_harness import make_config

    from statefulrt._client import RuntimeApiClient
    from statefulrt._runtime import Runtime

    api.drop_next = 100
    config = make_config(api)
    runtime = Runtime(
        config,
        client=RuntimeApiClient(config.runtime_api, attempts=4, backoff=0.01),
        handler=lambda event, context: "never",
        install_signals=False,
    )
    caplog.set_level(logging.CRITICAL, logger="statefulrt")
    assert await asyncio.wait_for(runtime.run(), 10) == EXIT_API_FAILURE
    assert api.next_calls == 4
    assert any(
        "did not answer GET /2018-06-01/runtime/invocation/next after 4 attempts"
        in record.getMessage()
        for record in caplog.records
    )


async def test_runtime_exits_when_next_is_refused(api: FakeRuntimeApi) -> None:
    from runtime_harness import make_config

    from statefulrt._runtime import Runtime

    api.fail_next_status = 500
    runtime = Runtime(
        make_config(api), handler=lambda e, c: None, install_signals=False
    )
    assert await asyncio.wait_for(runtime.run(), 10) == EXIT_API_FAILURE


async def test_runtime_shutdown_while_idle_exits_cleanly(api: FakeRuntimeApi) -> None:
    async with running(api, lambda e, c: "ok") as runtime:
        await api.answer(api.push({}))
    assert runtime.invocations == 1


async def test_runtime_user_agent_names_statefulrt(api: FakeRuntimeApi) -> None:
    async with running(api, lambda e, c: "ok"):
        await api.answer(api.push({}))
    (agent,) = api.user_agents
    assert agent.startswith("statefulrt/")
