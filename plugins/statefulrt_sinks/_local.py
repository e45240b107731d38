"""A sink backed by a directory: the embedded stand-in for a bucket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ._base import (
    ConflictError,
    ManifestError,
    MissingKeyError,
    SinkError,
    validate_key,
)

__all__ = ["LocalDirectorySink"]

logger = logging.getLogger("statefulrt.sinks")

# Objects are meant to be read by other tools (players, ffprobe, a web server),
# so they get the usual world-readable mode rather than mkstemp's 0600.
_FILE_MODE = 0o644


class LocalDirectorySink:
    """Store each key as a file under ``root``; ``/`` in a key makes folders.

    Writes are atomic and durable: the data goes to a temporary file in the
    target folder, is fsynced, and replaces the target with ``os.replace``, so a
    crash leaves the old object or the new one. Temporary files start with a
    dot and end in ``.tmp``.

    ``content_type`` is accepted for compatibility with object stores and
    ignored: a file has no place to keep it.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._root = Path(root).resolve()
        self._fsync = fsync

    def __repr__(self) -> str:
        return f"LocalDirectorySink({str(self._root)!r})"

    @property
    def root(self) -> Path:
        """The absolute folder that holds every object."""
        return self._root

    def path_for(self, key: str) -> Path:
        """The file that holds ``key``; raises ValueError if it is outside root."""
        validate_key(key)
        path = self._root.joinpath(*key.split("/"))

        # The key itself cannot climb out (validate_key refuses '..'), but a
        # symlink inside the root could point anywhere.
        if not path.resolve().is_relative_to(self._root):
            raise ValueError(
                f"sink key {key!r} resolves outside {self._root} through a symlink"
            )
        return path

    async def put(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> None:
        path = self.path_for(key)
        await asyncio.to_thread(self._write, key, path, bytes(data))
        logger.debug("put %s (%d bytes)", key, len(data))

    async def put_once(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> bool:
        """Create ``key`` holding ``data``, unless it already holds exactly that.

        True when this call stored it, False when the same bytes were already
        there; ``ConflictError`` when other bytes are. The file appears by a
        hard link, which fails rather than replace an existing file.
        """
        path = self.path_for(key)
        data = bytes(data)
        if await asyncio.to_thread(self._write, key, path, data, exclusive=True):
            logger.debug("put once %s (%d bytes)", key, len(data))
            return True
        if await self.get(key) != data:
            raise ConflictError(
                f"{path} already holds a different object than the {len(data)} "
                "bytes to write; keys must be unique per content: is another "
                "writer using this folder?"
            )
        return False

    async def put_manifest(
        self,
        key: str,
        body: bytes,
        *,
        requires: Iterable[str] = (),
        content_type: str | None = None,
    ) -> None:
        """Write ``key`` once every key in ``requires`` exists."""
        missing = [k for k in dict.fromkeys(requires) if not await self.exists(k)]
        if missing:
            raise ManifestError(key, missing, str(self._root))
        await self.put(key, body, content_type=content_type)

    # A folder needs no opening; these make the sink a statefulrt Resource
    # like the others, so handlers treat every sink alike.
    async def open(self) -> None:
        pass

    async def validate(self) -> bool:
        return True

    async def close(self) -> None:
        pass

    async def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MissingKeyError(key, str(self._root)) from None

    def _write(
        self, key: str, path: Path, data: bytes, *, exclusive: bool = False
    ) -> bool:
        """Store ``data`` at ``path``; False if ``exclusive`` and it exists."""
        parent = path.parent
        created = [p for p in (parent, *parent.parents) if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise SinkError(
                f"cannot store {key!r}: a part of its folder path is already an "
                "object in this sink; a directory sink cannot hold both 'a' and 'a/b'"
            ) from None
        if path.is_dir():
            raise SinkError(
                f"cannot store {key!r}: other keys already use it as a folder; "
                "a directory sink cannot hold both 'a' and 'a/b'"
            )

        # Write beside the target so os.replace stays a same-filesystem rename.
        fd, tmp_name = tempfile.mkstemp(
            dir=parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                if self._fsync:
                    os.fsync(tmp.fileno())
            os.chmod(tmp_name, _FILE_MODE)
            if exclusive:
                # link() never replaces: it fails if the name exists.
                try:
                    os.link(tmp_name, path)
                except FileExistsError:
                    return False
                finally:
                    os.unlink(tmp_name)
            else:
                os.replace(tmp_name, path)
        except BaseException:
            # Whatever failed, never leave a half-written temporary behind.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

        # The rename is only durable once the folder entry itself is on disk,
        # and so is every folder this write had to create.
        if self._fsync:
            for folder in (parent, *(p.parent for p in created)):
                _fsync_dir(folder)
        return True


def _fsync_dir(folder: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        # Some platforms (Windows) cannot open a folder; the rename still happened.
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
