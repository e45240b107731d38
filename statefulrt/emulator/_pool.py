"""The runtime's side of a Managed Instances environment (runtime-api.md A.14).

Up to ``AWS_LAMBDA_MAX_CONCURRENCY`` pollers wait on ``/next`` at once, and
nothing ties an answer to the connection that received the event: the request
id alone says which invocation a ``/response`` or ``/error`` is for, as in the
LMI RIE's invoke router. Every ``/next`` puts an idle poller in a queue; an
invocation goes to the first live one, or fails at once when there is none.
An invocation that timed out stays known for one more answer, which is refused
with ``410 InvokeTimeout`` (the runtime's code keeps running on LMI); any other
unknown id, including one already answered, is ``400 InvalidRequestID``.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ._environment import Environment
from ._invocation import Invocation
from ._logging import logger
from ._poll import Poll
from ._report import Reporter
from ._runtime_side import RuntimeSide, RuntimeState
from ._wire import RuntimeAPIError

__all__ = ["RuntimePool"]


class RuntimePool(RuntimeSide):
    """Concurrent pollers and the invocations they are running, by request id."""

    def __init__(self, timeout: float, reporter: Reporter) -> None:
        super().__init__(timeout, reporter)
        self._idle: deque[Poll[Invocation]] = deque()
        self._running: dict[str, Invocation] = {}
        self._timed_out: set[str] = set()
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    # -- driven by the sandbox ---------------------------------------------

    def attach(self, env: Environment) -> None:
        super().attach(env)
        if self.state is RuntimeState.READY:
            env.end_runtime_init()  # a poller came before spawn() returned

    def detach(self) -> Environment | None:
        env = super().detach()
        while self._idle:
            self._idle.popleft().release()
        self._running.clear()
        self._timed_out.clear()
        return env

    @property
    def idle_pollers(self) -> int:
        return sum(poll.live for poll in self._idle)

    def wait_pollers(self, count: int) -> asyncio.Future[None]:
        """Resolved once ``count`` pollers are waiting for an event at once."""
        future = asyncio.get_running_loop().create_future()
        self._watchers.append((count, future))
        self._notify()
        return future

    def dispatch(self, invocation: Invocation) -> bool:
        """Hand ``invocation`` to an idle poller; False when every one is busy."""
        while self._idle:
            poll = self._idle.popleft()
            if not poll.live:
                poll.release()  # its client is gone
                continue
            self._hand_out(invocation)
            self._running[invocation.request_id] = invocation
            poll.deliver(invocation)
            return True
        return False

    def time_out(self, invocation: Invocation) -> None:
        """The deadline passed: a late answer for it gets ``410``."""
        if self._running.pop(invocation.request_id, None) is not None:
            self._timed_out.add(invocation.request_id)

    def forget(self, invocation: Invocation) -> None:
        """The invocation ended otherwise (a reset): its id becomes unknown."""
        self._running.pop(invocation.request_id, None)

    # -- driven by the runtime ---------------------------------------------

    async def next(self, transport: asyncio.BaseTransport | None) -> Invocation:
        """``GET /runtime/invocation/next``: join the idle pollers and wait."""
        if self.state is RuntimeState.INIT_ERROR:
            raise RuntimeAPIError.transition(self.state.value, "Ready")
        self._sample_memory()
        # Init ends when the first poller asks for an event (with the
        # extensions ready), not when all of them have.
        if self.state is RuntimeState.STARTED and self.env is not None:
            self.env.end_runtime_init()
        self.state = RuntimeState.READY

        poll: Poll[Invocation] = Poll.open(transport)
        self._idle.append(poll)
        self._notify()
        try:
            invocation = await poll.future
        finally:
            if poll in self._idle:
                self._idle.remove(poll)
        if invocation is None:
            raise RuntimeAPIError.internal()
        return invocation

    # -- answers -----------------------------------------------------------

    def _check(self, request_id: str, target: str) -> Invocation:
        invocation = self._running.get(request_id)
        if invocation is not None:
            return invocation
        if request_id in self._timed_out:
            self._timed_out.discard(request_id)  # told once, as RAPID does
            logger.warning(
                "request %s: the runtime answered after the timeout; refused "
                "with 410 InvokeTimeout",
                request_id,
            )
            raise RuntimeAPIError.invoke_timeout()
        raise RuntimeAPIError.invalid_request_id()

    def _claim(self, request_id: str, target: str) -> Invocation:
        invocation = self._check(request_id, target)
        del self._running[request_id]
        return invocation

    def _notify(self) -> None:
        idle = self.idle_pollers
        waiting = []
        for count, future in self._watchers:
            if future.done():
                continue
            if idle >= count:
                future.set_result(None)
            else:
                waiting.append((count, future))
        self._watchers = waiting
