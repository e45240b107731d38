"""Exceptions raised by the timelapse plugin.

The tree::

    TimelapseError              root: catch this to catch anything below
    ├── TimelapseConfigError    a TIMELAPSE_* variable is missing or malformed
    ├── EventError              the event is not an S3 notification we can use
    ├── PhotoError              the object is missing or is not a JPEG photo
    └── SegmentConflictError    a segment key already holds different video

The handler lets these propagate: the runtime reports them as function errors,
answers the invocation, and keeps every frame already buffered.
"""

from __future__ import annotations

__all__ = [
    "EventError",
    "PhotoError",
    "SegmentConflictError",
    "TimelapseConfigError",
    "TimelapseError",
]


class TimelapseError(Exception):
    """Root of every error the timelapse plugin raises itself."""


class TimelapseConfigError(TimelapseError):
    """A TIMELAPSE_* environment variable is missing or has an unusable value."""


class EventError(TimelapseError):
    """The invocation event is not an S3 event notification the handler accepts."""


class PhotoError(TimelapseError):
    """The object named by the event cannot be read or decoded as a JPEG."""


class SegmentConflictError(TimelapseError):
    """A segment's key already holds different bytes than this flush produced."""
