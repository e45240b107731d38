from __future__ import annotations

import os
from pathlib import Path

import pytest

from statefulrt_sinks import (
    LocalDirectorySink,
    MissingKeyError,
    Sink,
    SinkError,
    validate_key,
)


@pytest.mark.asyncio
async def test_local_sink_put_then_get_returns_the_bytes(tmp_path: Path) -> None:
    sink = LocalDirectorySink(tmp_path)

    await sink.put("playlist.m3u8", b"#EXTM3U\n", content_type="audio/mpegurl")

    assert await sink.get("playlist.m3u8") == b"#EXTM3U\n"
    assert await sink.exists("playlist.m3u8") is True
    assert (tmp_path / "playlist.m3u8").read_bytes() == b"#EXTM3U\n"


@pytest.mark.asyncio
async def test_local_sink_slashes_in_key_make_subfolders(tmp_path: Path) -> None:
    sink = LocalDirectorySink(tmp_path)

    await sink.put("segments/2024/seg-1.ts", b"\x47" * 188)

    path = tmp_path / "segments" / "2024" / "seg-1.ts"
    assert path.read_bytes() == b"\x47" * 188
    assert sink.path_for("segments/2024/seg-1.ts") == path.resolve()
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.asyncio
async def test_local_sink_put_replaces_an_existing_object(tmp_path: Path) -> None:
    sink = LocalDirectorySink(tmp_path)
    await sink.put("a/b", b"old")

    await sink.put("a/b", b"new")

    assert await sink.get("a/b") == b"new"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../outside",
        "a/../../outside",
        "a/..",
        "a//b",
        "a/./b",
        "trailing/",
        "back\\slash",
        "nul\x00byte",
        "lone\udcffsurrogate",
        "k" * 1025,
    ],
)
@pytest.mark.asyncio
async def test_local_sink_refuses_keys_outside_root(tmp_path: Path, key: str) -> None:
    sink = LocalDirectorySink(tmp_path / "root")

    with pytest.raises(ValueError, match="sink key"):
        await sink.put(key, b"x")
    with pytest.raises(ValueError, match="sink key"):
        await sink.exists(key)

    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "root").exists()


@pytest.mark.asyncio
async def test_local_sink_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    sink = LocalDirectorySink(root)

    with pytest.raises(ValueError, match="through a symlink"):
        await sink.put("link/file", b"x")

    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.asyncio
async def test_local_sink_get_of_missing_key_raises_missing_key(tmp_path: Path) -> None:
    sink = LocalDirectorySink(tmp_path)
    await sink.put("folder/object", b"x")

    with pytest.raises(MissingKeyError, match="no object at key 'nothing'"):
        await sink.get("nothing")
    # A folder made by other keys is not an object.
    with pytest.raises(LookupError):
        await sink.get("folder")
    assert await sink.exists("folder") is False
    assert await sink.exists("nothing") is False


@pytest.mark.asyncio
async def test_local_sink_failed_write_keeps_old_object_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = LocalDirectorySink(tmp_path)
    await sink.put("seg.ts", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        await sink.put("seg.ts", b"new")
    monkeypatch.undo()

    assert await sink.get("seg.ts") == b"old"
    assert os.listdir(tmp_path) == ["seg.ts"]


@pytest.mark.asyncio
async def test_local_sink_key_used_as_folder_and_object_raises(tmp_path: Path) -> None:
    sink = LocalDirectorySink(tmp_path)
    await sink.put("a/b", b"x")
    await sink.put("c", b"y")

    with pytest.raises(SinkError, match="'a' and 'a/b'"):
        await sink.put("a", b"z")
    with pytest.raises(SinkError, match="'a' and 'a/b'"):
        await sink.put("c/d", b"z")

    assert await sink.get("a/b") == b"x"
    assert await sink.get("c") == b"y"


def test_local_sink_satisfies_sink_protocol(tmp_path: Path) -> None:
    sink = LocalDirectorySink(tmp_path)

    assert isinstance(sink, Sink)
    assert sink.root == tmp_path.resolve()
    assert repr(sink) == f"LocalDirectorySink({str(tmp_path.resolve())!r})"


def test_validate_key_accepts_unicode_and_dots_inside_names() -> None:
    assert validate_key("photos/été 1/.hidden..jpg") == "photos/été 1/.hidden..jpg"
    assert validate_key("k" * 1024) == "k" * 1024
