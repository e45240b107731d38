"""The runtime's internal extension.

Lambda sends SIGTERM to a runtime at shutdown only when at least one extension
is registered; otherwise the runtime is SIGKILLed without warning and whatever
it buffered is gone.  Registering an internal extension subscribed to no
events costs one request at init and one long poll that never returns, and buys
the runtime a SIGTERM and a few hundred milliseconds to flush.
"""

from __future__ import annotations

import asyncio

import orjson

from . import _wire as wire
from ._http import ConnectionLost, HttpConnection
from ._log import runtime_logger

EXTENSION_NAME = "statefulrt"
_BASE = f"/{wire.EXTENSION_API_VERSION}/extension"


class InternalExtension:
    """Registers with the Extensions API and keeps its ``event/next`` open."""

    def __init__(self, runtime_api: str, *, user_agent: str) -> None:
        host, _, port = runtime_api.rpartition(":")
        self._connection = HttpConnection(host, int(port), user_agent=user_agent)
        self.identifier: str | None = None
        self._poll: asyncio.Task[None] | None = None

    async def register(self) -> bool:
        """Register; False (and a debug line) when there is no Extensions API."""
        try:
            response = await self._connection.request(
                "POST",
                f"{_BASE}/register",
                orjson.dumps({"events": []}),
                {"Lambda-Extension-Name": EXTENSION_NAME},
            )
        except ConnectionLost as exc:
            runtime_logger.warning("could not register the extension: %s", exc)
            return False
        if response.status != 200:
            runtime_logger.debug(
                "extension registration answered %d; shutdown will be a SIGKILL",
                response.status,
            )
            return False
        self.identifier = response.headers.get("lambda-extension-identifier")
        if not self.identifier:
            return False
        # Init ends only once every registered extension asks for its next
        # event; with no events subscribed the request simply stays open.
        self._poll = asyncio.create_task(self._next_events(), name="statefulrt-ext")
        return True

    async def _next_events(self) -> None:
        assert self.identifier is not None
        headers = {"Lambda-Extension-Identifier": self.identifier}
        while True:
            try:
                response = await self._connection.request(
                    "GET", f"{_BASE}/event/next", headers=headers
                )
            except ConnectionLost as exc:
                runtime_logger.debug("extension event poll ended: %s", exc)
                return
            if response.status != 200:
                runtime_logger.debug(
                    "extension event poll answered %d", response.status
                )
                return
            event = orjson.loads(response.body or b"{}")
            if str(event.get("eventType", "")).upper() == "SHUTDOWN":
                return

    async def aclose(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        self._connection.close()
