"""The HLS media playlist that lists a timelapse's segments in order.

Only the subset of RFC 8216 a growing video needs: version 3 (decimal
durations), one ``#EXTINF`` per segment, a media sequence that stays 0 because
segments are never removed, and ``#EXT-X-ENDLIST`` once the stream is over.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HlsPlaylist", "PlaylistEntry"]

_VERSION = 3


@dataclass(frozen=True, slots=True)
class PlaylistEntry:
    """One segment: its URI relative to the playlist, and its length in seconds."""

    uri: str
    duration: float

    def frames(self, fps: int) -> int:
        """How many frames of ``fps`` this segment holds."""
        return round(self.duration * fps)


class HlsPlaylist:
    """An append-only list of segments, rendered as an HLS media playlist."""

    def __init__(
        self, entries: Iterable[PlaylistEntry] = (), *, ended: bool = False
    ) -> None:
        self._entries: list[PlaylistEntry] = []
        self._uris: set[str] = set()
        for entry in entries:
            self.add(entry.uri, entry.duration)
        self.ended = ended

    @property
    def entries(self) -> tuple[PlaylistEntry, ...]:
        return tuple(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uri: object) -> bool:
        return uri in self._uris

    def add(self, uri: str, duration: float) -> bool:
        """Append a segment; return False if ``uri`` is already listed.

        Adding the same segment twice is how a retried flush looks from here,
        so it is a no-op rather than an error, as long as the length agrees.
        Adding a segment reopens an ended playlist: the stream goes on.
        """
        if not uri or any(c in uri for c in "\r\n") or uri.startswith("#"):
            raise ValueError(f"segment URI {uri!r} cannot be written in a playlist")
        if not duration > 0 or not math.isfinite(duration):
            raise ValueError(f"segment duration must be positive, not {duration!r}")

        if uri in self._uris:
            listed = next(e for e in self._entries if e.uri == uri)
            if not math.isclose(listed.duration, duration, abs_tol=1e-6):
                raise ValueError(
                    f"segment {uri!r} is already listed with duration "
                    f"{listed.duration}, not {duration}"
                )
            return False

        self._entries.append(PlaylistEntry(uri, duration))
        self._uris.add(uri)
        self.ended = False
        return True

    @property
    def target_duration(self) -> int:
        """The smallest whole number of seconds no segment rounds above."""
        longest = max((e.duration for e in self._entries), default=1.0)
        # RFC 8216 4.3.3.1 compares each EXTINF rounded to the nearest integer;
        # the ceiling of the longest one (written to 6 places) satisfies that.
        return max(1, math.ceil(round(longest, 6)))

    def render(self) -> str:
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{_VERSION}",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
            "#EXT-X-MEDIA-SEQUENCE:0",
        ]
        for entry in self._entries:
            lines.append(f"#EXTINF:{entry.duration:.6f},")
            lines.append(entry.uri)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> HlsPlaylist:
        """Read a playlist written by ``render`` (unknown tags are skipped)."""
        lines = [line.strip() for line in text.splitlines()]
        if not lines or lines[0] != "#EXTM3U":
            raise ValueError("not an HLS playlist: the first line must be #EXTM3U")

        playlist = cls()
        duration: float | None = None
        for number, line in enumerate(lines[1:], start=2):
            if line.startswith("#EXTINF:"):
                try:
                    duration = float(line[len("#EXTINF:") :].split(",", 1)[0])
                except ValueError:
                    raise ValueError(f"line {number}: bad #EXTINF {line!r}") from None
            elif line == "#EXT-X-ENDLIST":
                playlist.ended = True
            elif line and not line.startswith("#"):
                if duration is None:
                    raise ValueError(f"line {number}: URI {line!r} has no #EXTINF")
                playlist.add(line, duration)
                duration = None
        return playlist
