from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from runtime_api_fake import FakeRuntimeApi


@pytest_asyncio.fixture
async def api() -> AsyncIterator[FakeRuntimeApi]:
    fake = FakeRuntimeApi()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
