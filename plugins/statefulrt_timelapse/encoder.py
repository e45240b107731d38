"""H.264 encoding that stays open across invocations, and MPEG-TS segments.

The point of a stateful timelapse is that the encoder is opened once per
process and fed one frame per invocation, so the cost of a frame does not grow
with the video. ``SegmentEncoder`` turns RGB frames into H.264 packets the
moment they arrive; ``mux_segment`` wraps a run of those packets, starting at
a keyframe, into one MPEG-TS file that a player can decode on its own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.stream import Stream
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

__all__ = ["EncodedPacket", "SegmentEncoder", "mux_segment"]


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded H.264 access unit (one frame), detached from PyAV.

    ``pts`` and ``dts`` count frames: the time base is ``1/fps``.
    """

    data: bytes
    pts: int
    dts: int
    keyframe: bool


class SegmentEncoder:
    """A libx264 encoder tuned so each segment of ``keyint`` frames stands alone.

    - ``tune=zerolatency`` turns off B-frames and lookahead, so every frame
      comes back as its packet from the same ``encode`` call and nothing is
      held inside the encoder between invocations.
    - ``keyint=min-keyint=N`` with ``scenecut=0`` puts an IDR frame exactly
      every N frames, where segments are cut; ``force_keyframe`` starts a new
      GOP early when a segment had to be cut sooner (age or shutdown flush).
    - No global header: libx264 then repeats SPS/PPS before every IDR, so a
      segment carries what a decoder needs to start on it.
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        fps: int,
        keyint: int,
        preset: str = "veryfast",
        first_pts: int = 0,
    ) -> None:
        if keyint < 1:
            raise ValueError(f"keyint must be at least 1, not {keyint}")
        self.width = width
        self.height = height
        self.fps = fps
        self.keyint = keyint
        self._next_pts = first_pts
        self._force_idr = False

        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, fps)
        ctx.framerate = Fraction(fps, 1)
        ctx.options = {
            "preset": preset,
            "tune": "zerolatency",
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0",
        }
        ctx.open()
        self._ctx: VideoCodecContext | None = ctx

    @property
    def next_pts(self) -> int:
        """The timestamp, in frames, the next encoded frame will carry."""
        return self._next_pts

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def force_keyframe(self) -> None:
        """Make the next frame an IDR frame, whatever the GOP counter says."""
        self._force_idr = True

    def encode(self, rgb: npt.NDArray[np.uint8]) -> list[EncodedPacket]:
        """Encode one RGB frame of shape (height, width, 3); return its packets."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"frame must be uint8 of shape ({self.height}, {self.width}, 3), "
                f"not {rgb.dtype} of shape {rgb.shape}"
            )
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        return self.encode_frame(frame.reformat(format="yuv420p"))

    def encode_frame(self, frame: av.VideoFrame) -> list[EncodedPacket]:
        """Encode a decoded frame of the encoder's size; return its packets.

        For frames that are already pictures, such as those decoded from a
        segment: a yuv420p frame goes to the encoder without a conversion. Its
        timestamp and picture type are replaced (the frame is changed).
        """
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError("the encoder is closed; create a new SegmentEncoder")
        if (frame.width, frame.height) != (self.width, self.height):
            raise ValueError(
                f"frame must be {self.width}x{self.height}, "
                f"not {frame.width}x{frame.height}"
            )
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")

        frame.pts = self._next_pts
        frame.time_base = ctx.time_base
        # A decoded frame keeps the type its decoder saw, and libx264 obeys a
        # frame's type: clear it, so that only keyint and force_keyframe()
        # place the keyframes. libx264 turns a forced I picture into an IDR.
        frame.pict_type = PictureType.I if self._force_idr else PictureType.NONE
        self._force_idr = False

        packets = [_detach(packet) for packet in ctx.encode(frame)]
        self._next_pts += 1
        return packets

    def close(self) -> list[EncodedPacket]:
        """Drain the encoder and release it; return any packets it still held."""
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return []
        # PyAV frees the codec context when the last reference goes; there is
        # no explicit close in PyAV 18.
        return [_detach(packet) for packet in ctx.encode(None)]


def _detach(packet: av.Packet[Stream]) -> EncodedPacket:
    if packet.pts is None or packet.dts is None:
        raise RuntimeError("libx264 returned a packet without timestamps")
    return EncodedPacket(
        data=bytes(packet),
        pts=packet.pts,
        dts=packet.dts,
        keyframe=packet.is_keyframe,
    )


def mux_segment(
    packets: Sequence[EncodedPacket], *, fps: int, width: int, height: int
) -> bytes:
    """Wrap H.264 ``packets`` in one self-contained MPEG-TS file, in memory.

    The packets keep their timestamps, so consecutive segments continue one
    timeline, as HLS expects without discontinuity tags. The first packet must
    be a keyframe: that is what lets the segment decode without the previous one.
    """
    if not packets:
        raise ValueError("a segment needs at least one packet")
    if not packets[0].keyframe:
        raise ValueError(
            f"segment starting at pts {packets[0].pts} does not start on a "
            "keyframe; force a keyframe where segments are cut"
        )

    time_base = Fraction(1, fps)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_mux_stream("h264", rate=fps, width=width, height=height)
        stream.time_base = time_base
        for item in packets:
            packet = av.Packet(item.data)
            packet.stream = stream
            packet.time_base = time_base
            packet.pts = item.pts
            packet.dts = item.dts
            packet.duration = 1
            packet.is_keyframe = item.keyframe
            container.mux(packet)
    return buffer.getvalue()
