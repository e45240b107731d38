"""The timelapse handler's settings, read once from an environment mapping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import TimelapseConfigError

__all__ = ["TimelapseConfig"]

SOURCE_ROOT: Final = "TIMELAPSE_SOURCE_ROOT"
OUTPUT: Final = "TIMELAPSE_OUTPUT"
SEGMENT_FRAMES: Final = "TIMELAPSE_SEGMENT_FRAMES"
FPS: Final = "TIMELAPSE_FPS"
SIZE: Final = "TIMELAPSE_SIZE"
PRESET: Final = "TIMELAPSE_PRESET"

# libx264's own preset names, fastest first.
_PRESETS: Final = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


@dataclass(frozen=True, kw_only=True)
class TimelapseConfig:
    """Where photos come from, where video goes, and how it is encoded.

    ``source_root`` is a local folder standing in for S3: the object ``key`` of
    bucket ``b`` is the file ``source_root / b / key``.
    """

    source_root: Path
    output: Path
    segment_frames: int = 30
    fps: int = 30
    width: int = 640
    height: int = 360
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if self.segment_frames < 1:
            raise TimelapseConfigError(
                f"segment_frames must be at least 1, not {self.segment_frames}"
            )
        if self.fps < 1:
            raise TimelapseConfigError(f"fps must be at least 1, not {self.fps}")
        # yuv420p stores colour at half resolution in both directions.
        if self.width < 2 or self.height < 2 or self.width % 2 or self.height % 2:
            raise TimelapseConfigError(
                f"frame size {self.width}x{self.height} must have even sides "
                "of at least 2 pixels (H.264 4:2:0 needs them)"
            )
        if self.preset not in _PRESETS:
            raise TimelapseConfigError(
                f"preset {self.preset!r} is not a libx264 preset; "
                f"use one of {', '.join(_PRESETS)}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TimelapseConfig:
        """Read the TIMELAPSE_* variables; raise naming the one that is wrong."""
        width, height = _size(env.get(SIZE) or "640x360")
        return cls(
            source_root=Path(_required(env, SOURCE_ROOT)),
            output=Path(_required(env, OUTPUT)),
            segment_frames=_positive_int(env, SEGMENT_FRAMES, 30),
            fps=_positive_int(env, FPS, 30),
            width=width,
            height=height,
            preset=env.get(PRESET) or "veryfast",
        )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise TimelapseConfigError(f"{name} is not set: it must name a local folder")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or ""
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise TimelapseConfigError(f"{name} must be a positive integer, not {raw!r}")
    return value


def _size(raw: str) -> tuple[int, int]:
    width, sep, height = raw.lower().partition("x")
    if sep and width.isdigit() and height.isdigit():
        return int(width), int(height)
    raise TimelapseConfigError(
        f"{SIZE} must look like WIDTHxHEIGHT (e.g. 640x360), not {raw!r}"
    )
