"""The runtime's side of a default (one poller) environment, as RAPID tracks it.

A ``RuntimeSlot`` is what one polling runtime sees through the Runtime API:
its state, the invocation it holds, the ``/next`` request it has open. The
states and their names are RAPID's, because they appear verbatim in the 403
bodies a runtime receives::

    Started --next--> Ready --(event handed out)--> Running
    Running --response/error--> RuntimeResponseSentState --next--> Ready
    Started --init/error--> InitError

and under SnapStart, where ``/restore/next`` is the moment of the snapshot::

    Started --restore/next--> RestoreReady --(restore)--> Restoring
    Restoring --next--> Ready
    Restoring --restore/error--> RuntimeRestoreErrorState

Polling ``/next`` again is what *finishes* an invocation: work done between
the answer and that poll is billed and bounded by the same deadline, as on
Lambda. The sandbox decides when to offer events, when to restore and when to
reset; the slot only keeps the runtime's side of the conversation consistent.
"""

from __future__ import annotations

import asyncio

from ._environment import Environment
from ._invocation import Invocation
from ._poll import Poll
from ._report import Reporter
from ._runtime_side import RuntimeSide, RuntimeState, reported_error_type
from ._wire import RuntimeAPIError, error_payload

__all__ = ["RuntimeSlot", "RuntimeState"]


class RuntimeSlot(RuntimeSide):
    """One runtime poller's conversation with the Runtime API."""

    def __init__(
        self, timeout: float, reporter: Reporter, *, snap_start: bool = False
    ) -> None:
        super().__init__(timeout, reporter)
        self._snap_start = snap_start
        self.current: Invocation | None = None
        self._pending: Invocation | None = None
        self._poll: Poll[Invocation] | None = None
        self._restore_poll: Poll[bool] | None = None

    # -- driven by the sandbox ---------------------------------------------

    def attach(self, env: Environment) -> None:
        super().attach(env)
        if self.state is RuntimeState.READY and self._poll and self._poll.live:
            # The runtime polled /next before its spawn() call returned.
            env.end_runtime_init()
            env.end_restore()
        elif self.state is RuntimeState.RESTORE_READY:
            env.end_runtime_init()

    def detach(self) -> Environment | None:
        """Reset to ``Started`` and hand back the environment to be killed."""
        env = super().detach()
        self.current = self._pending = None
        for poll in (self._poll, self._restore_poll):
            if poll is not None:
                poll.release()
        self._poll = self._restore_poll = None
        return env

    @property
    def idle_pollers(self) -> int:
        return int(self._poll is not None and self._poll.live)

    def offer(self, invocation: Invocation) -> None:
        """Make ``invocation`` current: hand it out now or at the next poll."""
        self.current = invocation
        poll, self._poll = self._poll, None
        if poll is not None and poll.live:
            self._hand_out(invocation)
            poll.deliver(invocation)
            return
        if poll is not None:
            poll.release()
        self._pending = invocation

    def restore(self) -> None:
        """The snapshot is taken and restored: release ``/restore/next``.

        A runtime that went straight to ``/next`` (one that does not
        implement the restore hooks) counts as restored already.
        """
        if self.env is not None:
            self.env.restore_started_at = asyncio.get_running_loop().time()
        poll, self._restore_poll = self._restore_poll, None
        if self.state is RuntimeState.RESTORE_READY and poll is not None:
            self.state = RuntimeState.RESTORING
            poll.deliver(True)

    def _hand_out(self, invocation: Invocation) -> None:
        self.state = RuntimeState.RUNNING
        super()._hand_out(invocation)

    # -- driven by the runtime ---------------------------------------------

    async def next(self, transport: asyncio.BaseTransport | None) -> Invocation:
        """``GET /runtime/invocation/next``: block until there is an event."""
        poll = self._poll
        if poll is not None and not poll.future.done():
            if not poll.stale:
                raise RuntimeAPIError.transition(self.state.value, "Ready")
            poll.release()
        refused = (
            RuntimeState.RUNNING,
            RuntimeState.INIT_ERROR,
            RuntimeState.RESTORE_READY,
            RuntimeState.RESTORE_ERROR,
        )
        if self.state in refused:
            raise RuntimeAPIError.transition(self.state.value, "Ready")
        self._sample_memory()

        # Polling again is what ends init (or the restore), or ends the
        # previous invocation.
        if self.env is not None:
            if self.state is RuntimeState.STARTED:
                self.env.end_runtime_init()
            if self.state in (RuntimeState.STARTED, RuntimeState.RESTORING):
                self.env.end_restore()
        if self.state is RuntimeState.RESPONSE_SENT and self.current is not None:
            self.current.finished.set_result(None)
        self.state = RuntimeState.READY

        pending, self._pending = self._pending, None
        if pending is not None:
            self._hand_out(pending)
            return pending

        poll = self._poll = Poll.open(transport)
        try:
            invocation = await poll.future
        finally:
            if self._poll is poll:
                self._poll = None
        if invocation is None:
            # The environment was reset under this poll: RAPID's answer to a
            # runtime it no longer wants is a 500, which tells it to exit.
            raise RuntimeAPIError.internal()
        return invocation

    def init_error(
        self, body: bytes | None, *, error_type: str | None, limit: int
    ) -> None:
        # RAPID takes an init error posted while restoring as a restore
        # error, for runtimes written before /restore/error existed.
        if self.state is RuntimeState.RESTORING:
            self.restore_error(body, error_type=error_type, limit=limit)
            return
        super().init_error(body, error_type=error_type, limit=limit)

    async def restore_next(self, transport: asyncio.BaseTransport | None) -> None:
        """``GET /runtime/restore/next``: init is done; wait for the restore."""
        if not self._snap_start or self.state is not RuntimeState.STARTED:
            raise RuntimeAPIError.transition(self.state.value, "RestoreReady")
        self.state = RuntimeState.RESTORE_READY
        self._sample_memory()
        if self.env is not None:
            self.env.end_runtime_init()

        poll = self._restore_poll = Poll.open(transport)
        try:
            restored = await poll.future
        finally:
            if self._restore_poll is poll:
                self._restore_poll = None
        if not restored:
            raise RuntimeAPIError.internal()

    def restore_error(
        self, body: bytes | None, *, error_type: str | None, limit: int
    ) -> None:
        """``POST /runtime/restore/error``: the after-restore hooks failed."""
        if self.state is not RuntimeState.RESTORING:
            target = RuntimeState.RESTORE_ERROR.value
            raise RuntimeAPIError.transition(self.state.value, target)
        if body is None:
            raise RuntimeAPIError.too_large(limit)
        self.state = RuntimeState.RESTORE_ERROR
        self._sample_memory()
        payload = error_payload(body, error_type)
        if self.env is not None:
            self.env.fail_restore(reported_error_type(payload, error_type), payload)

    # -- answers -----------------------------------------------------------

    def _check(self, request_id: str, target: str) -> Invocation:
        invocation = self.current
        answerable = (RuntimeState.RUNNING, RuntimeState.RESPONSE_SENT)
        if (
            invocation is None
            or invocation.request_id != request_id
            or self.state not in answerable
        ):
            raise RuntimeAPIError.invalid_request_id()
        if self.state is RuntimeState.RESPONSE_SENT:
            raise RuntimeAPIError.transition(self.state.value, target)
        return invocation

    def _claim(self, request_id: str, target: str) -> Invocation:
        invocation = self._check(request_id, target)
        self.state = RuntimeState.RESPONSE_SENT
        return invocation
