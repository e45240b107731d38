"""Sinks: where flushed data goes.

A sink is a flat key/value object store with the semantics of an S3 bucket:
``put`` replaces the whole object at once, so a reader sees either the old
object or the new one and never a torn write; ``/`` in a key is only a
separator. ``LocalDirectorySink`` is the embedded default that stands in for a
bucket on one machine; an S3 sink implements the same ``Sink`` protocol.

Errors::

    SinkError           root: anything a sink raises on purpose
    └── MissingKeyError  ``get`` of a key that holds no object (also a LookupError)

A key that can never be valid (empty, absolute, with ``..``) raises ValueError.
"""

from __future__ import annotations

from ._base import MissingKeyError, Sink, SinkError, validate_key
from ._local import LocalDirectorySink

__all__ = [
    "LocalDirectorySink",
    "MissingKeyError",
    "Sink",
    "SinkError",
    "validate_key",
]
