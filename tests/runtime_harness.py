"""Helpers to run the runtime in-process against the fake Runtime API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from runtime_api_fake import FakeRuntimeApi

from statefulrt import RuntimeConfig
from statefulrt._client import RuntimeApiClient
from statefulrt._runtime import Runtime


def make_config(api: FakeRuntimeApi, **overrides: Any) -> RuntimeConfig:
    settings: dict[str, Any] = {
        "runtime_api": api.address,
        "handler": "app.handler",
        "task_root": ".",
        "function_name": "test",
        "function_version": "$LATEST",
        "memory_size_mb": 256,
        "log_group_name": "/aws/lambda/test",
        "log_stream_name": "2026/12/04/[$LATEST]abc",
    }
    settings.update(overrides)
    return RuntimeConfig(**settings)


@asynccontextmanager
async def running(
    api: FakeRuntimeApi,
    handler: object,
    *,
    environ: dict[str, str] | None = None,
    attempts: int = 6,
    **overrides: Any,
) -> AsyncIterator[Runtime]:
    config = make_config(api, **overrides)
    client = RuntimeApiClient(config.runtime_api, attempts=attempts, backoff=0.01)
    runtime = Runtime(
        config,
        client=client,
        handler=handler,
        environ=environ if environ is not None else {},
        install_signals=False,
    )
    task = asyncio.create_task(runtime.run())
    try:
        yield runtime
    finally:
        runtime.request_shutdown("test over")
        await asyncio.wait_for(task, 10)
