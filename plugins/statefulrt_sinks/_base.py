"""The sink protocol, its errors, and the key rules every sink shares."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

__all__ = [
    "ConflictError",
    "ExactlyOnceSink",
    "ManifestError",
    "MissingKeyError",
    "Sink",
    "SinkError",
    "validate_key",
]

# S3 caps keys at 1,024 bytes of UTF-8; holding every sink to the same limit
# means a key that works locally also works in a bucket.
MAX_KEY_BYTES = 1024


class SinkError(Exception):
    """Root of the errors a sink raises on purpose."""


class MissingKeyError(SinkError, LookupError):
    """``get`` asked for a key that holds no object."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"no object at key {key!r} in {where}")
        self.key = key


class ConflictError(SinkError):
    """``put_once`` found other bytes than its own already stored at the key."""


class ManifestError(SinkError):
    """``put_manifest`` was asked to name keys that hold no object yet."""

    def __init__(self, key: str, missing: Sequence[str], where: str) -> None:
        shown = ", ".join(repr(k) for k in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(
            f"manifest {key!r} in {where} not written: it names {shown}{more}, "
            "which do not exist; write the segments first"
        )
        self.key = key
        self.missing = list(missing)


@runtime_checkable
class Sink(Protocol):
    """An object store addressed by ``/``-separated keys.

    What callers may rely on, whatever the backend:

    - ``put`` is atomic: a concurrent ``get`` sees the old object or the new
      one, never part of either. It replaces an existing object.
    - after ``put`` returns, ``exists`` and ``get`` see the object.
    - ``put`` is not conditional. A caller that must write a key exactly once
      checks ``exists`` first and names its objects deterministically, so a
      retried write lands on the same key.
    """

    async def put(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> None:
        """Store ``data`` at ``key``, replacing any object already there."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        ...

    async def get(self, key: str) -> bytes:
        """The object at ``key``; raises MissingKeyError when there is none."""
        ...


@runtime_checkable
class ExactlyOnceSink(Sink, Protocol):
    """A sink that can create a key at most once, and is a statefulrt Resource.

    ``put_once`` creates ``key`` or, when it exists, checks that it holds the
    same bytes (True: stored now; False: it already was; ``ConflictError``:
    other bytes are there). ``put_manifest`` writes a key that names others
    only once those exist. ``open``/``validate``/``close`` let a handler keep
    the sink in ``self.resources``.
    """

    async def put_once(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> bool: ...

    async def put_manifest(
        self,
        key: str,
        body: bytes,
        *,
        requires: Iterable[str] = (),
        content_type: str | None = None,
    ) -> None: ...

    async def open(self) -> None: ...

    async def validate(self) -> bool: ...

    async def close(self) -> None: ...


def validate_key(key: str) -> str:
    """Return ``key`` if every sink can store it, else raise ValueError.

    A valid key is a relative path of non-empty segments separated by ``/``,
    none of them ``.`` or ``..``. These rules are stricter than S3's so that a
    key maps to exactly one file under a directory and can never leave it.
    """
    if not isinstance(key, str):
        raise ValueError(f"sink key must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError("sink key must not be empty")
    if "\x00" in key or "\\" in key:
        raise ValueError(
            f"sink key {key!r} must not contain NUL or backslash; use '/' as separator"
        )
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"sink key {key!r} is not valid Unicode text") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise ValueError(f"sink key is longer than {MAX_KEY_BYTES} bytes of UTF-8")
    if key.startswith("/"):
        raise ValueError(f"sink key {key!r} must be relative: drop the leading '/'")

    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(
                f"sink key {key!r} has an empty, '.' or '..' segment; "
                "keys must name a path inside the sink"
            )
    return key
