"""The emulator's logger, declared once.

``statefulrt.emulator`` carries lifecycle milestones at INFO (servers bound,
runtime process started) and resets at WARNING (timeouts, crashes). The
emulator installs no handlers; the CLI or the application does.
"""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("statefulrt.emulator")
