"""An append-only journal of accepted items, replayed when the process restarts.

Lambda kills the runtime on a timeout or crash but keeps ``/tmp``; a
journal-mode handler therefore appends every buffered item here before its
invocation is answered, and the next init replays what the dead process left.

Record layout (all integers big-endian)::

    length u32 | crc32 u32 | kind u8 | payload (length bytes, pickled)

The checksum covers kind and payload, so a record torn by a kill in the middle
of a write is detected; replay stops there, logs what it skipped, and
truncates the file to the last whole record.

Kinds: ITEM (buffer, item, size, key), CLAIM (epoch, items per buffer and
writer: a flush started), COMMIT (epoch, the keys it flushed recently and
writer: that flush succeeded).  A successful flush compacts
the journal to one COMMIT and the items still pending.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pickle
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ._log import runtime_logger

ITEM: Final = 1
CLAIM: Final = 2
COMMIT: Final = 3

_HEADER = struct.Struct(">IIB")
# One record never needs more; a bigger length means a corrupt header.
_MAX_RECORD = 64 * 1024 * 1024

FsyncPolicy = Literal["invocation", "flush", "never"]


def journal_path(
    directory: str,
    function_name: str,
    handler_class: str,
    tenant_id: str | None = None,
) -> str:
    """Where a journal lives: one per function, handler class and tenant."""
    name = f"statefulrt-{function_name or 'function'}-{handler_class}"
    if tenant_id is not None:
        # tenant ids are caller-chosen text: never let one shape a path
        name += "-tenant-" + hashlib.sha256(tenant_id.encode()).hexdigest()[:20]
    return os.path.join(directory, name + ".journal")


@dataclass
class Replay:
    """What a journal held: the last committed epoch and the pending work."""

    epoch: int = 0
    items: list[tuple[str, Any, int, str | None]] = field(default_factory=list)
    claim: tuple[int, dict[str, int], str] | None = None  # an unfinished flush
    recent_keys: list[str] = field(default_factory=list)
    writer: str | None = None  # whose flushes the epochs count
    skipped_bytes: int = 0


class Journal:
    """The journal file of one handler.

    ``fsync`` chooses when data reaches the disk: ``"invocation"`` (default)
    syncs once before each answer that appended items; ``"flush"`` only at
    compaction; ``"never"`` leaves it to the kernel.  A killed process loses
    nothing under any of them, because written data sits in the kernel's page
    cache; syncing guards against the machine itself stopping.
    """

    def __init__(self, path: str, *, fsync: FsyncPolicy = "invocation") -> None:
        if fsync not in ("invocation", "flush", "never"):
            raise ValueError(
                f"fsync must be 'invocation', 'flush' or 'never', not {fsync!r}"
            )
        self.path = path
        self.fsync_policy: FsyncPolicy = fsync
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._dirty = False

    # -- ownership --------------------------------------------------------------

    def lock(self, wait: float) -> bool:
        """Take the journal for this process; False if another keeps it.

        The runtime holds the lock for its whole life and the companion
        extension takes it only to rescue a journal the runtime left behind.
        The kernel releases it when its holder dies, even by SIGKILL.
        """
        if self._lock_fd is None:
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -- writing ----------------------------------------------------------------

    def append_item(self, buffer: str, item: Any, size: int, key: str | None) -> None:
        try:
            payload = pickle.dumps((buffer, item, size, key), protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(
                f"items of a journal-mode handler must be picklable; {buffer!r} "
                f"got {type(item).__name__}: {exc}"
            ) from exc
        self._write(ITEM, payload)

    def append_claim(self, epoch: int, counts: dict[str, int], writer: str) -> None:
        self._write(CLAIM, pickle.dumps((epoch, counts, writer), protocol=5))

    def sync(self) -> None:
        """Make appended records durable, if the policy asks for it."""
        if self._dirty and self._fd is not None and self.fsync_policy == "invocation":
            os.fdatasync(self._fd)
        self._dirty = False

    def compact(
        self,
        epoch: int,
        pending: list[tuple[str, Any, int, str | None]],
        recent_keys: list[str],
        writer: str,
    ) -> None:
        """Replace the journal by a COMMIT of ``epoch`` and the pending items."""
        temporary = f"{self.path}.compact"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            commit = pickle.dumps((epoch, recent_keys, writer), protocol=5)
            chunks = [_record(COMMIT, commit)]
            chunks.extend(
                _record(ITEM, pickle.dumps(entry, protocol=5)) for entry in pending
            )
            _write_all(fd, b"".join(chunks))
            if self.fsync_policy != "never":
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        self.close()
        self._dirty = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, kind: int, payload: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _write_all(self._fd, _record(kind, payload))
        self._dirty = True

    # -- reading ----------------------------------------------------------------

    def replay(self) -> Replay:
        """Read what a previous process left; truncates a torn tail."""
        result = Replay()
        try:
            with open(self.path, "rb") as source:
                data = source.read()
        except FileNotFoundError:
            return result

        end = 0
        for record_end, kind, payload in _records(data):
            end = record_end
            try:
                value = pickle.loads(payload)
            except Exception as exc:  # a class that no longer exists, say
                runtime_logger.error(
                    "journal %s: cannot read a record (%s: %s); skipped it",
                    self.path,
                    type(exc).__name__,
                    exc,
                )
                continue
            if kind == ITEM:
                result.items.append(value)
            elif kind == CLAIM:
                result.claim = value
                result.writer = value[2]
            else:
                result.epoch, result.recent_keys, result.writer = value
                result.claim = None
        if end < len(data):
            result.skipped_bytes = len(data) - end
            runtime_logger.warning(
                "journal %s ends with %d bytes of a torn record; skipped them",
                self.path,
                result.skipped_bytes,
            )
            with open(self.path, "r+b") as target:
                target.truncate(end)
        return result


def _record(kind: int, payload: bytes) -> bytes:
    checksum = zlib.crc32(payload, zlib.crc32(bytes((kind,))))
    return _HEADER.pack(len(payload), checksum, kind) + payload


def _records(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, checksum, kind = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        end = start + length
        if length > _MAX_RECORD or end > len(data):
            return
        payload = data[start:end]
        if zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != checksum:
            return
        if kind not in (ITEM, CLAIM, COMMIT):
            return
        yield end, kind, payload
        offset = end


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
