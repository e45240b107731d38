"""The sink protocol, its errors, and the key rules every sink shares."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MissingKeyError", "Sink", "SinkError", "validate_key"]

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
