"""The companion external extension: rescues a journal the runtime left behind.

When an invocation times out or the runtime crashes, Lambda kills the runtime
and sends SHUTDOWN to external extensions.  A journal-mode handler's journal
then still holds what was acknowledged but not flushed; the next init would
replay it, but a sandbox that is never invoked again would keep it forever.
This extension subscribes to SHUTDOWN and flushes what the journal holds,
using the handler's own flush hooks.

Ship it as an executable file in ``/opt/extensions`` (the file name is the
extension's name)::

    #!/bin/sh
    exec python3 -m statefulrt.companion --name "$(basename "$0")"

Extensions do not see ``_HANDLER``; set ``STATEFULRT_HANDLER`` (for example
``app.Events``) in the function's environment.  ``STATEFULRT_TASK_ROOT``
defaults to ``/var/task``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

import orjson

from . import _wire as wire
from ._client import USER_AGENT
from ._exceptions import ConfigError, HandlerError
from ._handler import StatefulHandler
from ._http import HttpConnection
from ._journal import Journal, journal_path
from ._loader import load_handler
from ._log import runtime_logger
from ._runtime import open_state

DEFAULT_NAME = "statefulrt-companion"
# Leave this much of the shutdown deadline unused, to exit before SIGKILL.
DEADLINE_MARGIN = 0.1

__all__ = ["main", "rescue_journal"]


async def rescue_journal(
    handler_spec: str,
    *,
    task_root: str,
    journal_dir: str,
    function_name: str,
    wait: float = 1.0,
) -> int:
    """Flush what the handler's journal holds; returns the items flushed.

    Waits up to ``wait`` seconds for the runtime to release the journal (a
    runtime finishing its own shutdown flush keeps it), and returns 0 without
    touching it if the runtime still holds it, or it holds nothing.
    """
    class_name = handler_spec.rpartition(".")[2]
    probe = Journal(journal_path(journal_dir, function_name, class_name))
    if not probe.lock(wait):
        probe.unlock()
        runtime_logger.info("journal %s is still in use; leaving it", probe.path)
        return 0
    pending = len(probe.replay().items)
    probe.unlock()
    if pending == 0:
        return 0

    target = load_handler(handler_spec, task_root)
    if not (isinstance(target, type) and issubclass(target, StatefulHandler)):
        raise HandlerError(
            f"STATEFULRT_HANDLER {handler_spec!r} must name a StatefulHandler "
            "subclass: only those have a journal"
        )
    handler = target()
    if handler.durability != "journal":
        return 0
    flusher = open_state(
        handler, handler.state, journal_dir=journal_dir, function_name=function_name
    )
    journal = handler.state.journal
    assert journal is not None
    try:
        await handler.init()
        flushed = handler.state.pending_items
        if not await flusher.flush("shutdown"):
            return 0
        runtime_logger.info("rescued %d journaled items", flushed)
        return flushed
    finally:
        try:
            await handler.close()
        finally:
            journal.close()
            journal.unlock()


async def serve(environ: Mapping[str, str], name: str) -> int:
    """Register for SHUTDOWN, wait for it, rescue the journal, exit."""
    api = environ.get("AWS_LAMBDA_RUNTIME_API", "")
    handler_spec = environ.get("STATEFULRT_HANDLER") or environ.get("_HANDLER", "")
    if not api or not handler_spec:
        raise ConfigError(
            "the companion extension needs AWS_LAMBDA_RUNTIME_API and "
            "STATEFULRT_HANDLER (the handler class, e.g. 'app.Events')"
        )
    host, _, port = api.rpartition(":")
    connection = HttpConnection(host, int(port), user_agent=USER_AGENT)
    base = f"/{wire.EXTENSION_API_VERSION}/extension"

    response = await connection.request(
        "POST",
        f"{base}/register",
        orjson.dumps({"events": ["SHUTDOWN"]}),
        {"Lambda-Extension-Name": name},
    )
    if response.status != 200:
        runtime_logger.error(
            "extension %s could not register (%d): %s",
            name,
            response.status,
            response.body[:300].decode("utf-8", "replace"),
        )
        return 1
    identifier = response.headers["lambda-extension-identifier"]

    while True:
        response = await connection.request(
            "GET",
            f"{base}/event/next",
            headers={"Lambda-Extension-Identifier": identifier},
        )
        if response.status != 200:
            runtime_logger.error("event/next answered %d; exiting", response.status)
            return 1
        event = orjson.loads(response.body)
        if str(event.get("eventType", "")).upper() != "SHUTDOWN":
            continue

        deadline = float(event.get("deadlineMs", 0)) / 1000
        budget = max(deadline - time.time() - DEADLINE_MARGIN, 0.05)
        task_root = environ.get("STATEFULRT_TASK_ROOT") or environ.get(
            "LAMBDA_TASK_ROOT", "/var/task"
        )
        journal_dir = (
            environ.get("STATEFULRT_JOURNAL_DIR") or environ.get("TMPDIR") or "/tmp"
        )
        try:
            await asyncio.wait_for(
                rescue_journal(
                    handler_spec,
                    task_root=task_root,
                    journal_dir=journal_dir,
                    function_name=environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
                    wait=budget / 2,
                ),
                budget,
            )
        except TimeoutError:
            runtime_logger.error("journal rescue ran out of the shutdown budget")
        connection.close()
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    name = DEFAULT_NAME
    if args[:1] == ["--name"] and len(args) > 1:
        name = args[1]
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format=f"[{name}] %(message)s"
    )
    try:
        return asyncio.run(serve(os.environ, name))
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
