"""The timelapse plugin's logger, declared in one place.

``statefulrt.timelapse``  encoder opened, segments written (INFO); per-frame
                          timings and skipped records (DEBUG)

Under ``statefulrt.*`` so the runtime's log setup (level, Lambda's text or JSON
format, request ids) applies to it as to the runtime's own loggers.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("statefulrt.timelapse")
