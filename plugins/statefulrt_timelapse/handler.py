"""``TimelapseHandler``: one S3 photo per invocation in, HLS video out.

Per process (construction and ``init``): read the TIMELAPSE_* settings, open
the sink (a folder, or an ``s3://`` bucket whose client then lives across warm
invocations), resume from the playlist already there, and open the H.264
encoder, which also stays open across warm invocations.

Per invocation (``handle``): decode the JPEG each S3 record names, encode it as
one frame, buffer the packet. The response goes out before anything is written.

Per segment (``flush``, after the response, every N frames): mux the buffered
packets into one MPEG-TS segment and store it once under a key named after its
first frame; then ``write_playlist`` lists it in ``playlist.m3u8``. The
playlist is written only after its segment exists, so it never names a missing
file; a flush that fails keeps its frames buffered and is retried with the same
frames, landing on the same segment key with the same bytes.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from statefulrt import Context, Flush, FlushPolicy, StatefulHandler, flush_hook
from statefulrt_sinks import (
    ConflictError,
    ExactlyOnceSink,
    MissingKeyError,
    Sink,
    sink_from_url,
    validate_key,
)

from ._log import logger
from .config import TimelapseConfig
from .encoder import EncodedPacket, SegmentEncoder, mux_segment
from .errors import EventError, PhotoError, SegmentConflictError
from .events import S3ObjectRef, parse_s3_event
from .playlist import HlsPlaylist

__all__ = ["PLAYLIST_KEY", "TimelapseHandler", "segment_key"]

PLAYLIST_KEY = "playlist.m3u8"
PACKETS = "packets"

_TS_TYPE = "video/mp2t"
_M3U8_TYPE = "application/vnd.apple.mpegurl"


def segment_key(packets: Sequence[EncodedPacket]) -> str:
    """The sink key of the segment holding ``packets``.

    It is named after its first frame's place in the video. That is as
    deterministic as the flush epoch for a retry (same items, same key) and,
    unlike the epoch, which restarts at 1 in every process, it also stays unique
    when a new process resumes the same video.
    """
    return f"segments/seg-{packets[0].pts:010d}.ts"


class TimelapseHandler(StatefulHandler):
    """Append each photo an S3 event names to an HLS timelapse."""

    # Replaced per instance by one built from TIMELAPSE_SEGMENT_FRAMES.
    flush_policy = FlushPolicy(every=30, on_shutdown=True)
    # S3 does not send an answered event again, so a frame buffered in memory
    # only would be lost with the process on a timeout or crash. The journal
    # in /tmp brings it back at the next init; init() continues after it.
    durability = "journal"

    def __init__(
        self, environ: Mapping[str, str] | None = None, sink: Sink | None = None
    ) -> None:
        """Read the TIMELAPSE_* settings from ``environ`` (``os.environ``).

        ``sink`` replaces the one TIMELAPSE_OUTPUT names (tests pass one); it
        stays the caller's to close. The sink ``init`` makes from the
        settings is a resource of this handler, closed at shutdown.
        """
        super().__init__()
        # The runtime builds this instance during its init phase and reads
        # the flush policy before init() runs (a journal replay needs it), so
        # the settings that shape the policy are read here, not in init().
        config = TimelapseConfig.from_env(os.environ if environ is None else environ)
        self.flush_policy = FlushPolicy(every=config.segment_frames, on_shutdown=True)
        self.config = config
        self._sink = sink
        self._encoder: SegmentEncoder | None = None
        self._playlist = HlsPlaylist()
        self._cut_epoch = 0

    @property
    def playlist(self) -> HlsPlaylist:
        """The playlist as last written (or about to be) to the sink."""
        return self._playlist

    # -- lifecycle ----------------------------------------------------------------

    async def init(self) -> None:
        config = self.config
        if self._sink is None:
            # The raw string: sink_from_url tells a folder from s3://bucket/prefix.
            sink = sink_from_url(config.output, endpoint_url=config.s3_endpoint)
            self._sink = await self.resources.open("sink", sink)

        # Resume: a new process continues the video the sink already holds,
        # with timestamps that carry on from its last frame, or from the last
        # frame a journal replayed into the buffer, if that is later.
        self._playlist = await self._load_playlist()
        listed = sum(e.frames(config.fps) for e in self._playlist.entries)
        replayed: list[EncodedPacket] = self.state.buffer(PACKETS).peek()
        first_pts = max([listed, *(packet.pts + 1 for packet in replayed)])

        self._encoder = SegmentEncoder(
            width=config.width,
            height=config.height,
            fps=config.fps,
            keyint=config.segment_frames,
            preset=config.preset,
            first_pts=first_pts,
        )
        logger.info(
            "timelapse encoder open: %dx%d at %d fps, %d frames per segment, "
            "writing to %r, resuming after %d segments and %d buffered frames "
            "at frame %d",
            config.width,
            config.height,
            config.fps,
            config.segment_frames,
            self._sink,
            len(self._playlist),
            len(replayed),
            first_pts,
        )

    async def handle(self, event: Any, context: Context) -> dict[str, int]:
        encoder = self._require_encoder()
        refs = []
        for ref in parse_s3_event(event):
            if ref.created:
                refs.append(ref)
            else:
                logger.debug(
                    "skipping %s of s3://%s/%s", ref.event_name, ref.bucket, ref.key
                )

        # Decode every photo before encoding any: a bad record fails the whole
        # event without having buffered part of it, so a redelivery of the
        # event does not duplicate frames.
        frames = [await asyncio.to_thread(self._read_photo, ref) for ref in refs]

        # Encode and buffer without yielding to the loop, so that a flush never
        # claims the buffer between a frame and its packet.
        buffer = self.state.buffer(PACKETS)
        counter = self.state.counter("frames")
        for rgb in frames:
            started = time.perf_counter()
            for packet in encoder.encode(rgb):
                buffer.append(packet, size=len(packet.data))
            counter.incr()
            logger.debug(
                "frame %d encoded in %.2f ms",
                counter.value,
                (time.perf_counter() - started) * 1000,
            )
        return {"frames": counter.value, "pending": len(buffer)}

    async def flush(self, batch: Flush) -> None:
        packets: list[EncodedPacket] = batch.items(PACKETS)
        if batch.epoch != self._cut_epoch:
            # The buffer was cut here: the next frame starts the next segment,
            # so it must be a keyframe even if the policy cut early (age,
            # shutdown, a backlog after failed flushes).
            self._require_encoder().force_keyframe()
            self._cut_epoch = batch.epoch
        if not packets:
            return

        config = self.config
        started = time.perf_counter()
        data = mux_segment(
            packets, fps=config.fps, width=config.width, height=config.height
        )
        key = segment_key(packets)
        if not await self._store_segment(key, data):
            logger.info("segment %s already stored; not writing it again", key)
            return
        logger.info(
            "segment %s written: %d frames, %d bytes, %.1f ms (flush %s, %s)",
            key,
            len(packets),
            len(data),
            (time.perf_counter() - started) * 1000,
            batch.name,
            batch.reason,
        )

    @flush_hook
    async def write_playlist(self, batch: Flush) -> None:
        """List the segment ``flush`` just stored; end the list at shutdown."""
        packets: list[EncodedPacket] = batch.items(PACKETS)
        ending = batch.reason == "shutdown"
        if not packets and not ending:
            return

        # Hooks run in order and stop at the first failure, so reaching this
        # point means the segment is in the sink: listing it is safe. A sink
        # that can checks again before the playlist names it.
        added: list[str] = []
        if packets:
            key = segment_key(packets)
            self._playlist.add(key, len(packets) / self.config.fps)
            added.append(key)
        if ending:
            self._playlist.ended = True
        await self._write_playlist(requires=added)

    async def close(self) -> None:
        # Packets still inside the encoder would be frames never acknowledged
        # as buffered, and zerolatency keeps none: draining only releases it.
        # First, so that a failing sink below cannot keep it open.
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            leftover = encoder.close()
            if leftover:
                logger.warning(
                    "encoder held %d packets at close; they are dropped", len(leftover)
                )

        # The runtime already ran the shutdown flush. If that had nothing to
        # write (or was a retry of an earlier batch), the playlist still needs
        # its end mark; it lists only segments already stored.
        if self._sink is not None and len(self._playlist) and not self._playlist.ended:
            self._playlist.ended = True
            await self._write_playlist()

    # -- helpers ------------------------------------------------------------------

    def _require_encoder(self) -> SegmentEncoder:
        if self._encoder is None:
            raise RuntimeError(
                "the timelapse encoder is not open: init() has not run or "
                "close() already ran"
            )
        return self._encoder

    def _require_sink(self) -> Sink:
        if self._sink is None:
            raise RuntimeError("TimelapseHandler.init() has not run yet")
        return self._sink

    async def _load_playlist(self) -> HlsPlaylist:
        sink = self._require_sink()
        try:
            text = (await sink.get(PLAYLIST_KEY)).decode("utf-8")
        except MissingKeyError:
            return HlsPlaylist()
        return HlsPlaylist.parse(text)

    async def _write_playlist(self, *, requires: Sequence[str] = ()) -> None:
        """Write the playlist; ``requires`` are the segments this version adds."""
        body = self._playlist.render().encode("utf-8")
        sink = self._require_sink()
        if isinstance(sink, ExactlyOnceSink):
            await sink.put_manifest(
                PLAYLIST_KEY, body, requires=requires, content_type=_M3U8_TYPE
            )
        else:
            await sink.put(PLAYLIST_KEY, body, content_type=_M3U8_TYPE)

    async def _store_segment(self, key: str, data: bytes) -> bool:
        """Store segment ``key`` once; False if it already held ``data``.

        Already holding ``data`` is how a retried flush finds the write of an
        earlier attempt. A key holding other bytes is either a leftover of a
        batch that was lost before the playlist listed it (a process that died
        with its journal), which is safe to replace, or a listed segment,
        which is not.
        """
        sink = self._require_sink()
        if isinstance(sink, ExactlyOnceSink):
            # Created at most once, by a conditional write where the store
            # has one (S3's If-None-Match), so two attempts never both write.
            try:
                return await sink.put_once(key, data, content_type=_TS_TYPE)
            except ConflictError:
                pass
        elif not await sink.exists(key):
            await sink.put(key, data, content_type=_TS_TYPE)
            return True
        elif await sink.get(key) == data:
            return False

        # Other bytes are stored at the key.
        if key in self._playlist:
            raise SegmentConflictError(
                f"segment {key} is already listed in {PLAYLIST_KEY} with different "
                "video; is another process writing the same output? Give each "
                "writer its own TIMELAPSE_OUTPUT"
            )
        logger.warning("replacing %s, a segment no playlist lists", key)
        await sink.put(key, data, content_type=_TS_TYPE)
        return True

    def _read_photo(self, ref: S3ObjectRef) -> npt.NDArray[np.uint8]:
        """Read and decode the JPEG at ``ref``, fitted to the output size."""
        config = self.config
        path = _object_path(config.source_root, ref.bucket, ref.key)
        where = f"s3://{ref.bucket}/{ref.key}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PhotoError(
                f"{where} does not exist (looked for {path}); was it deleted "
                "after the event was sent?"
            ) from None
        except OSError as exc:
            raise PhotoError(f"{where} cannot be read: {exc}") from exc

        try:
            with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
                # Let the JPEG decoder scale down by 1/2..1/8 while decoding:
                # much cheaper than decoding a camera's full resolution.
                image.draft("RGB", (config.width, config.height))
                upright = ImageOps.exif_transpose(image).convert("RGB")
        except UnidentifiedImageError:
            raise PhotoError(f"{where} is not a JPEG photo") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise PhotoError(f"{where} is a damaged JPEG: {exc}") from exc

        # Fill the frame and crop the overflow rather than letterboxing.
        fitted = ImageOps.fit(
            upright, (config.width, config.height), Image.Resampling.BILINEAR
        )
        return np.asarray(fitted, dtype=np.uint8)


def _object_path(root: Path, bucket: str, key: str) -> Path:
    if not bucket or "/" in bucket or bucket in (".", ".."):
        raise EventError(f"bucket name {bucket!r} is not a valid S3 bucket name")
    try:
        validate_key(key)
    except ValueError as exc:
        raise PhotoError(
            f"object key {key!r} cannot stand for a file under {root}: {exc}"
        ) from None
    return root.joinpath(bucket, *key.split("/"))
