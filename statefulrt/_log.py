"""The loggers of statefulrt, declared in one place.

``statefulrt.runtime``    lifecycle milestones: init done, shutdown, exits
``statefulrt.invoke``     per-invocation steps (DEBUG and TRACE only)
``statefulrt.flush``      flushes written, failed and retried
``statefulrt.transport``  Runtime API connections and retries
``statefulrt.emulator``   the built-in Lambda emulator

Only the bootstrap (``statefulrt run``) installs handlers.
"""

from __future__ import annotations

import logging

# Below DEBUG, for the per-request detail nobody wants in CloudWatch by default.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

runtime_logger = logging.getLogger("statefulrt.runtime")
invoke_logger = logging.getLogger("statefulrt.invoke")
flush_logger = logging.getLogger("statefulrt.flush")
transport_logger = logging.getLogger("statefulrt.transport")
emulator_logger = logging.getLogger("statefulrt.emulator")
