"""The Runtime API client alone, with aioresponses standing in for Lambda."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ClientResponse
from aioresponses import aioresponses

from statefulrt import ErrorPayload, RuntimeApiError, RuntimeApiUnavailable
from statefulrt._client import AiohttpTransport, RuntimeApiClient

BASE = "http://127.0.0.1:9001/2018-06-01/runtime"
ARN = "arn:aws:lambda:us-east-2:1:function:f"
TRACE = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1"


class _SentWriter:
    output_size = 0


class _MockResponse(ClientResponse):
    # aiohttp 3.14 made `stream_writer` a required argument and aioresponses
    # 0.7.9 does not pass it yet; drop this class once aioresponses does.
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentWriter())
        super().__init__(method, url, **kwargs)


class _Mock(aioresponses):
    def add(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", _MockResponse)
        super().add(*args, **kwargs)


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with _Mock() as mock:
        yield mock


def _client(attempts: int = 3) -> RuntimeApiClient:
    return RuntimeApiClient(
        "127.0.0.1:9001",
        transport=AiohttpTransport("127.0.0.1", 9001),
        attempts=attempts,
        backoff=0.001,
    )


async def test_client_next_parses_every_header(mocked: aioresponses) -> None:
    mocked.get(
        f"{BASE}/invocation/next",
        body=b'{"a":1}',
        headers={
            "Lambda-Runtime-Aws-Request-Id": "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
            "Lambda-Runtime-Deadline-Ms": "1542409706888",
            "Lambda-Runtime-Invoked-Function-Arn": ARN,
            "Lambda-Runtime-Trace-Id": TRACE,
            "Lambda-Runtime-Client-Context": '{"custom":{}}',
            "Lambda-Runtime-Cognito-Identity": '{"cognitoIdentityId":"x"}',
            "Lambda-Runtime-Aws-Tenant-Id": "tenant-7",
            "Content-Type": "application/json",
        },
    )
    client = _client()
    invocation = await client.next_invocation()
    await client.aclose()
    assert invocation.request_id == "8476a536-e9f4-11e8-9739-2dfe598c3fcd"
    assert invocation.deadline_ms == 1542409706888
    assert invocation.invoked_function_arn == ARN
    assert invocation.trace_id == TRACE
    assert invocation.client_context == '{"custom":{}}'
    assert invocation.cognito_identity == '{"cognitoIdentityId":"x"}'
    assert invocation.tenant_id == "tenant-7"
    assert invocation.content_type == "application/json"
    assert invocation.body == b'{"a":1}'
    assert invocation.problems == ()


async def test_client_next_retries_connection_errors(mocked: aioresponses) -> None:
    url = f"{BASE}/invocation/next"
    mocked.get(url, exception=aiohttp.ClientConnectionError("reset"))
    mocked.get(url, exception=aiohttp.ServerDisconnectedError())
    mocked.get(
        url,
        body=b"{}",
        headers={
            "Lambda-Runtime-Aws-Request-Id": "r1",
            "Lambda-Runtime-Deadline-Ms": "1",
        },
    )
    client = _client()
    invocation = await client.next_invocation()
    await client.aclose()
    assert invocation.request_id == "r1"


async def test_client_gives_up_after_attempts(mocked: aioresponses) -> None:
    url = f"{BASE}/invocation/next"
    for _ in range(3):
        mocked.get(url, exception=aiohttp.ClientConnectionError("refused"))
    client = _client(attempts=3)
    with pytest.raises(RuntimeApiUnavailable, match="after 3 attempts"):
        await client.next_invocation()
    await client.aclose()


async def test_client_next_error_status_raises(mocked: aioresponses) -> None:
    mocked.get(
        f"{BASE}/invocation/next",
        status=403,
        body=b'{"errorMessage":"State ...","errorType":"InvalidStateTransition"}',
    )
    client = _client()
    with pytest.raises(RuntimeApiError) as caught:
        await client.next_invocation()
    await client.aclose()
    assert caught.value.status == 403
    assert str(caught.value).startswith(
        "GET /2018-06-01/runtime/invocation/next answered 403: "
    )


async def test_client_post_refused_is_false_and_5xx_raises(
    mocked: aioresponses,
) -> None:
    mocked.post(
        f"{BASE}/invocation/r1/response",
        status=400,
        body=b'{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}',
    )
    mocked.post(f"{BASE}/invocation/r2/response", status=202, body=b'{"status":"OK"}')
    mocked.post(f"{BASE}/invocation/r3/error", status=500, body=b"{}")
    client = _client()
    assert await client.post_response("r1", b"1") is False
    assert await client.post_response("r2", b"1") is True
    with pytest.raises(RuntimeApiError):
        await client.post_error("r3", ErrorPayload("E", "m"))
    await client.aclose()


async def test_client_posts_error_type_header(mocked: aioresponses) -> None:
    mocked.post(f"{BASE}/init/error", status=202, body=b'{"status":"OK"}')
    client = _client()
    error = ErrorPayload("Runtime.ImportModuleError", "Unable to import module 'x'")
    assert await client.post_init_error(error) is True
    await client.aclose()
    (call,) = mocked.requests[("POST", aiohttp.client.URL(f"{BASE}/init/error"))]
    assert call.kwargs["headers"]["Lambda-Runtime-Function-Error-Type"] == (
        "Runtime.ImportModuleError"
    )
    assert call.kwargs["data"] == (
        b'{"errorMessage":"Unable to import module \'x\'",'
        b'"errorType":"Runtime.ImportModuleError","requestId":"","stackTrace":[]}'
    )


def test_client_rejects_bad_address() -> None:
    with pytest.raises(
        ValueError, match="runtime_api must be 'host:port', not 'nohost'"
    ):
        RuntimeApiClient("nohost")
