"""Sinks: where flushed data goes.

A sink is a flat key/value object store with the semantics of an S3 bucket:
``put`` replaces the whole object at once, so a reader sees either the old
object or the new one and never a torn write; ``/`` in a key is only a
separator. ``LocalDirectorySink`` is the embedded default that stands in for a
bucket on one machine; ``statefulrt_sinks.s3.S3Sink`` (the ``s3`` extra) is a
bucket. Both also write a key at most once (``put_once``), write manifests
only after what they name (``put_manifest``), and are statefulrt Resources.
``sink_from_url`` picks one from a path or an ``s3://bucket/prefix`` URL.

Errors::

    SinkError           root: anything a sink raises on purpose
    ├── MissingKeyError  ``get`` of a key that holds no object (also a LookupError)
    ├── ConflictError    ``put_once`` found other bytes at its key
    └── ManifestError    ``put_manifest`` names keys that do not exist yet

A key that can never be valid (empty, absolute, with ``..``) raises ValueError.
"""

from __future__ import annotations

from ._base import (
    ConflictError,
    ExactlyOnceSink,
    ManifestError,
    MissingKeyError,
    Sink,
    SinkError,
    validate_key,
)
from ._local import LocalDirectorySink
from ._url import sink_from_url

__all__ = [
    "ConflictError",
    "ExactlyOnceSink",
    "LocalDirectorySink",
    "ManifestError",
    "MissingKeyError",
    "Sink",
    "SinkError",
    "sink_from_url",
    "validate_key",
]
