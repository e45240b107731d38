from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from av.video.frame import PictureType
from PIL import Image

from statefulrt import FlushPolicy

# The runtime's own flusher, so these tests exercise the real claim, commit and
# retry rules rather than a copy of them.
from statefulrt._flush import Flusher
from statefulrt_sinks import LocalDirectorySink, MissingKeyError
from statefulrt_timelapse.config import TimelapseConfig
from statefulrt_timelapse.encoder import EncodedPacket, SegmentEncoder, mux_segment
from statefulrt_timelapse.errors import EventError, PhotoError, TimelapseConfigError
from statefulrt_timelapse.events import parse_s3_event, s3_put_event
from statefulrt_timelapse.handler import PLAYLIST_KEY, TimelapseHandler
from statefulrt_timelapse.photos import PhotoSequence, frame_key, write_photos
from statefulrt_timelapse.playlist import HlsPlaylist
from statefulrt_timelapse.verify import (
    count_frames,
    ffprobe_frames,
    hls_timestamps,
    inspect_video,
)

W, H = 320, 180
BUCKET = "timelapse-photos"
# The handler never looks at its context; the end-to-end test passes real ones.
NO_CONTEXT: Any = None


def frames(count: int, seed: int = 0) -> Iterator[np.ndarray[Any, Any]]:
    sequence = PhotoSequence(width=W, height=H, seed=seed)
    return (sequence.frame(i) for i in range(count))


def encode(count: int, keyint: int) -> list[EncodedPacket]:
    encoder = SegmentEncoder(width=W, height=H, fps=30, keyint=keyint)
    packets = [p for rgb in frames(count) for p in encoder.encode(rgb)]
    assert encoder.close() == []
    return packets


def decode_ts(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return [frame.pts or 0 for frame in container.decode(video=0)]


# -- encoder and segments ------------------------------------------------------


def test_segment_encoder_one_packet_per_frame_and_idr_every_n() -> None:
    encoder = SegmentEncoder(width=W, height=H, fps=30, keyint=5)

    per_frame = [encoder.encode(rgb) for rgb in frames(12)]

    assert [len(packets) for packets in per_frame] == [1] * 12
    packets = [packets[0] for packets in per_frame]
    assert [p.pts for p in packets] == list(range(12))
    assert [p.dts for p in packets] == list(range(12))
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 5, 10]
    assert encoder.close() == []
    assert encoder.closed is True


def test_segment_encoder_force_keyframe_restarts_the_gop() -> None:
    encoder = SegmentEncoder(width=W, height=H, fps=30, keyint=5, first_pts=100)
    keyframes = []

    for index, rgb in enumerate(frames(10)):
        if index == 3:
            encoder.force_keyframe()
        (packet,) = encoder.encode(rgb)
        if packet.keyframe:
            keyframes.append(packet.pts)

    assert keyframes == [100, 103, 108]
    assert encoder.next_pts == 110


def test_segment_encoder_rejects_a_frame_of_the_wrong_size() -> None:
    encoder = SegmentEncoder(width=W, height=H, fps=30, keyint=5)

    with pytest.raises(ValueError, match=r"shape \(180, 320, 3\)"):
        encoder.encode(np.zeros((H, W + 2, 3), dtype=np.uint8))

    encoder.close()
    with pytest.raises(RuntimeError, match="closed"):
        encoder.encode(np.zeros((H, W, 3), dtype=np.uint8))


def test_segment_encoder_encode_frame_reencodes_decoded_frames() -> None:
    data = mux_segment(encode(12, keyint=4), fps=30, width=W, height=H)
    with av.open(io.BytesIO(data), format="mpegts") as container:
        decoded = list(container.decode(video=0))
    # The decoder marks each frame I or P; keyint=6 must win over that.
    i, p = PictureType.I, PictureType.P
    assert [f.pict_type for f in decoded[:5]] == [i, p, p, p, i]
    encoder = SegmentEncoder(width=W, height=H, fps=30, keyint=6, first_pts=50)

    packets = [p for frame in decoded for p in encoder.encode_frame(frame)]

    assert [p.pts for p in packets] == list(range(50, 62))
    assert [p.pts for p in packets if p.keyframe] == [50, 56]
    again = mux_segment(packets, fps=30, width=W, height=H)
    assert len(decode_ts(again)) == 12
    with pytest.raises(ValueError, match=f"must be {W}x{H}, not 64x64"):
        encoder.encode_frame(av.VideoFrame(64, 64, "yuv420p"))


def test_mux_segment_decodes_alone_to_exactly_its_frames() -> None:
    packets = encode(16, keyint=8)

    # The second GOP alone: no SPS/PPS or reference frames from the first.
    data = mux_segment(packets[8:16], fps=30, width=W, height=H)

    assert data[0] == 0x47  # MPEG-TS sync byte
    assert len(data) % 188 == 0
    # 90 kHz clock: frame 8 at 30 fps is 24,000 ticks, then 3,000 per frame.
    assert decode_ts(data) == [24_000 + 3_000 * i for i in range(8)]


def test_mux_segment_same_packets_give_same_bytes() -> None:
    packets = encode(6, keyint=6)

    first = mux_segment(packets, fps=30, width=W, height=H)
    second = mux_segment(packets, fps=30, width=W, height=H)

    assert first == second


def test_mux_segment_refuses_to_start_between_keyframes() -> None:
    packets = encode(6, keyint=6)

    with pytest.raises(ValueError, match="does not start on a keyframe"):
        mux_segment(packets[1:], fps=30, width=W, height=H)
    with pytest.raises(ValueError, match="at least one packet"):
        mux_segment([], fps=30, width=W, height=H)


# -- playlist ------------------------------------------------------------------


def test_hls_playlist_renders_rfc8216_media_playlist() -> None:
    playlist = HlsPlaylist()
    playlist.add("segments/seg-0000000000.ts", 1.0)
    playlist.add("segments/seg-0000000030.ts", 0.7)

    assert playlist.render() == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:1\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXTINF:1.000000,\n"
        "segments/seg-0000000000.ts\n"
        "#EXTINF:0.700000,\n"
        "segments/seg-0000000030.ts\n"
    )

    playlist.ended = True
    assert playlist.render().endswith("seg-0000000030.ts\n#EXT-X-ENDLIST\n")


def test_hls_playlist_parse_reads_back_what_render_wrote() -> None:
    playlist = HlsPlaylist()
    playlist.add("a.ts", 2.5)
    playlist.add("b.ts", 1 / 3)
    playlist.ended = True

    parsed = HlsPlaylist.parse(playlist.render())

    assert [(e.uri, e.frames(30)) for e in parsed.entries] == [
        ("a.ts", 75),
        ("b.ts", 10),
    ]
    assert parsed.ended is True
    assert parsed.target_duration == 3


def test_hls_playlist_adding_a_listed_segment_again_is_a_no_op() -> None:
    playlist = HlsPlaylist()

    assert playlist.add("a.ts", 1.0) is True
    assert playlist.add("a.ts", 1.0) is False
    assert len(playlist) == 1
    with pytest.raises(ValueError, match="already listed"):
        playlist.add("a.ts", 2.0)


# -- S3 events -----------------------------------------------------------------


def test_s3_put_event_has_the_shape_s3_sends() -> None:
    key = "camera 1/frame é+1.jpg"

    event = s3_put_event(BUCKET, key, b"jpeg bytes", region="eu-west-1", sequence=5)

    (record,) = event["Records"]
    assert sorted(record) == [
        "awsRegion",
        "eventName",
        "eventSource",
        "eventTime",
        "eventVersion",
        "requestParameters",
        "responseElements",
        "s3",
        "userIdentity",
    ]
    assert record["eventVersion"] == "2.1"
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["awsRegion"] == "eu-west-1"
    assert record["eventTime"] == "1970-01-01T00:00:00.000Z"
    assert sorted(record["responseElements"]) == ["x-amz-id-2", "x-amz-request-id"]
    assert len(record["responseElements"]["x-amz-request-id"]) == 16
    s3 = record["s3"]
    assert s3["s3SchemaVersion"] == "1.0"
    assert s3["bucket"]["name"] == BUCKET
    assert s3["bucket"]["arn"] == f"arn:aws:s3:::{BUCKET}"
    # Form-style URL encoding: space is '+', a literal '+' and 'é' are %XX.
    assert s3["object"]["key"] == "camera+1/frame+%C3%A9%2B1.jpg"
    assert s3["object"]["size"] == 10
    assert s3["object"]["eTag"] == "2ccd799f3a5130350478899447b6aa06"
    assert s3["object"]["sequencer"] == "000000000000000005"
    assert json.loads(json.dumps(event)) == event


def test_parse_s3_event_decodes_the_key_back() -> None:
    event = s3_put_event(BUCKET, "camera 1/frame é+1.jpg", b"x")

    (ref,) = parse_s3_event(json.loads(json.dumps(event)))

    assert ref.bucket == BUCKET
    assert ref.key == "camera 1/frame é+1.jpg"
    assert ref.created is True
    assert ref.size == 1


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"hello": "world"}, "not an S3 event notification"),
        ([1, 2], "not an S3 event notification"),
        ({"Records": [{"eventSource": "aws:sqs"}]}, "expected 'aws:s3'"),
        ({"Records": [{"eventSource": "aws:s3", "eventName": "x"}]}, r"\.s3 must"),
    ],
)
def test_parse_s3_event_rejects_other_events(event: object, message: str) -> None:
    with pytest.raises(EventError, match=message):
        parse_s3_event(event)


# -- photos --------------------------------------------------------------------


def test_photo_sequence_frames_are_not_flat_and_keep_changing() -> None:
    sequence = PhotoSequence(width=W, height=H, seed=3, scene_frames=20)
    shots = [sequence.frame(i).astype(np.int16) for i in range(60)]

    assert all(shot.shape == (H, W, 3) for shot in shots)
    # Sensor noise alone gives a flat frame a deviation of about 2.
    assert min(float(shot.std()) for shot in shots) > 8.0
    changes = [
        float(np.abs(a - b).mean()) for a, b in zip(shots, shots[1:], strict=False)
    ]
    assert min(changes) > 1.0
    # A cut to another photo every 20 frames changes far more than a pan step.
    assert changes[19] > 3 * float(np.median(changes))


def test_photo_sequence_same_seed_same_frames() -> None:
    first = PhotoSequence(width=W, height=H, seed=1)
    again = PhotoSequence(width=W, height=H, seed=1)
    other = PhotoSequence(width=W, height=H, seed=2)

    assert np.array_equal(first.frame(17), again.frame(17))
    assert not np.array_equal(first.frame(17), other.frame(17))


def test_write_photos_lays_out_jpegs_like_a_bucket(tmp_path: Path) -> None:
    sequence = PhotoSequence(width=W, height=H)

    keys = write_photos(tmp_path, 3, bucket=BUCKET, prefix="cam", sequence=sequence)

    assert keys == [
        "cam/frame-000001.jpg",
        "cam/frame-000002.jpg",
        "cam/frame-000003.jpg",
    ]
    assert frame_key("", 9) == "frame-000010.jpg"
    with Image.open(tmp_path / BUCKET / "cam" / "frame-000002.jpg") as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (W, H), "RGB")


# -- config --------------------------------------------------------------------


def test_timelapse_config_missing_variable_is_named() -> None:
    with pytest.raises(TimelapseConfigError, match="TIMELAPSE_OUTPUT is not set"):
        TimelapseConfig.from_env({"TIMELAPSE_SOURCE_ROOT": "/photos"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "TIMELAPSE_SEGMENT_FRAMES",
            "0",
            "TIMELAPSE_SEGMENT_FRAMES must be a positive",
        ),
        ("TIMELAPSE_FPS", "thirty", "TIMELAPSE_FPS must be a positive"),
        ("TIMELAPSE_SIZE", "641x360", "must have even sides"),
        ("TIMELAPSE_SIZE", "big", "WIDTHxHEIGHT"),
        ("TIMELAPSE_PRESET", "turbo", "not a libx264 preset"),
    ],
)
def test_timelapse_config_bad_value_is_refused(
    name: str, value: str, message: str
) -> None:
    env = {
        "TIMELAPSE_SOURCE_ROOT": "/photos",
        "TIMELAPSE_OUTPUT": "/video",
        name: value,
    }

    with pytest.raises(TimelapseConfigError, match=message):
        TimelapseConfig.from_env(env)


def test_timelapse_config_keeps_an_s3_output_as_written() -> None:
    env = {
        "TIMELAPSE_SOURCE_ROOT": "/photos",
        "TIMELAPSE_OUTPUT": "s3://videos/camera-1/day-1",
        "TIMELAPSE_S3_ENDPOINT": "http://127.0.0.1:5000",
    }

    config = TimelapseConfig.from_env(env)

    assert config.output == "s3://videos/camera-1/day-1"
    assert config.s3_endpoint == "http://127.0.0.1:5000"
    assert config.output_is_s3 is True
    assert (
        TimelapseConfig.from_env({**env, "TIMELAPSE_S3_ENDPOINT": ""}).s3_endpoint
        is None
    )


@pytest.mark.parametrize(
    ("output", "endpoint", "message"),
    [
        ("s3:/videos/day-1", "", r"TIMELAPSE_OUTPUT: .* names no bucket"),
        ("s3://videos", "127.0.0.1:5000", r"TIMELAPSE_S3_ENDPOINT: .* http://"),
        ("/video", "http://127.0.0.1:5000", r"TIMELAPSE_S3_ENDPOINT: .* s3:// out"),
    ],
)
def test_timelapse_config_bad_output_names_the_variable(
    output: str, endpoint: str, message: str
) -> None:
    env = {
        "TIMELAPSE_SOURCE_ROOT": "/photos",
        "TIMELAPSE_OUTPUT": output,
        "TIMELAPSE_S3_ENDPOINT": endpoint,
    }

    with pytest.raises(TimelapseConfigError, match=message):
        TimelapseConfig.from_env(env)


# -- handler, driven by the runtime's flusher ----------------------------------


class FlakySink(LocalDirectorySink):
    """A directory sink whose writes fail on demand, counting every write.

    ``puts`` lists the keys written, in order: every ``put`` (the playlist,
    through ``put_manifest``) and every ``put_once`` that stored something.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail_next: dict[str, int] = {}
        self.puts: list[str] = []

    def _maybe_fail(self, key: str) -> None:
        prefix = next((p for p in self.fail_next if key.startswith(p)), None)
        if prefix is not None and self.fail_next[prefix] > 0:
            self.fail_next[prefix] -= 1
            raise ConnectionError(f"injected failure writing {key}")

    async def put(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> None:
        self._maybe_fail(key)
        await super().put(key, data, content_type=content_type)
        self.puts.append(key)

    async def put_once(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> bool:
        self._maybe_fail(key)
        stored = await super().put_once(key, data, content_type=content_type)
        if stored:
            self.puts.append(key)
        return stored


class Harness:
    """A TimelapseHandler plus the runtime's flusher, as the runtime wires them."""

    def __init__(self, tmp_path: Path, *, segment_frames: int, sink: FlakySink) -> None:
        self.source = tmp_path / "s3"
        self.sink = sink
        self.handler = TimelapseHandler(
            environ={
                "TIMELAPSE_SOURCE_ROOT": str(self.source),
                "TIMELAPSE_OUTPUT": str(sink.root),
                "TIMELAPSE_SEGMENT_FRAMES": str(segment_frames),
                "TIMELAPSE_SIZE": f"{W}x{H}",
                "TIMELAPSE_PRESET": "ultrafast",
            },
            sink=sink,
        )
        self.flusher: Flusher | None = None

    async def init(self) -> None:
        await self.handler.init()
        self.flusher = Flusher(
            self.handler.state, self.handler.flush_policy, self.handler.flush_hooks()
        )

    def photo_events(self, count: int, *, start: int = 0) -> list[dict[str, Any]]:
        sequence = PhotoSequence(width=W, height=H)
        keys = write_photos(
            self.source, start + count, bucket=BUCKET, sequence=sequence
        )
        return [
            json.loads(
                json.dumps(
                    s3_put_event(BUCKET, key, (self.source / BUCKET / key).read_bytes())
                )
            )
            for key in keys[start:]
        ]

    async def invoke(self, event: object) -> dict[str, int]:
        assert self.flusher is not None
        result = await self.handler.handle(event, NO_CONTEXT)
        await self.flusher.at_boundary(now=float("inf"))
        return result

    async def shutdown(self) -> None:
        assert self.flusher is not None
        await self.flusher.flush("shutdown")
        await self.handler.close()

    def playlist(self) -> HlsPlaylist:
        return HlsPlaylist.parse((self.sink.root / PLAYLIST_KEY).read_text())


@pytest.mark.asyncio
async def test_timelapse_handler_writes_segments_and_playlist(tmp_path: Path) -> None:
    harness = Harness(tmp_path, segment_frames=5, sink=FlakySink(tmp_path / "out"))
    await harness.init()

    results = [await harness.invoke(event) for event in harness.photo_events(12)]
    await harness.shutdown()

    assert results[0] == {"frames": 1, "pending": 1}
    assert results[4] == {"frames": 5, "pending": 5}  # answered before the flush
    assert results[5] == {"frames": 6, "pending": 1}
    assert results[-1] == {"frames": 12, "pending": 2}
    playlist = harness.playlist()
    assert [e.uri for e in playlist.entries] == [
        "segments/seg-0000000000.ts",
        "segments/seg-0000000005.ts",
        "segments/seg-0000000010.ts",
    ]
    assert playlist.ended is True
    report = inspect_video(harness.sink.root / PLAYLIST_KEY)
    assert report.frames_per_segment == (5, 5, 2)
    assert (report.width, report.height) == (W, H)
    assert hls_timestamps(harness.sink.root / PLAYLIST_KEY) == pytest.approx(
        [i / 30 for i in range(12)]
    )


@pytest.mark.asyncio
async def test_timelapse_handler_playlist_never_names_a_missing_segment(
    tmp_path: Path,
) -> None:
    sink = FlakySink(tmp_path / "out")
    harness = Harness(tmp_path, segment_frames=4, sink=sink)
    await harness.init()
    events = harness.photo_events(9)
    sink.fail_next = {"segments/": 1}

    for event in events[:4]:
        await harness.invoke(event)

    # The segment write failed: nothing is listed, and the frames wait.
    assert sink.puts == []
    assert not (sink.root / PLAYLIST_KEY).exists()
    assert len(harness.handler.state.buffer("packets")) == 4

    # The next boundary retries the same four frames under the same key.
    sink.fail_next = {PLAYLIST_KEY: 1}
    await harness.invoke(events[4])
    assert sink.puts == ["segments/seg-0000000000.ts"]
    assert not (sink.root / PLAYLIST_KEY).exists()

    # Segment stored, playlist failed: the retry lists it without rewriting it.
    for event in events[5:]:
        await harness.invoke(event)
    await harness.shutdown()

    assert sink.puts == [
        "segments/seg-0000000000.ts",
        PLAYLIST_KEY,
        "segments/seg-0000000004.ts",
        PLAYLIST_KEY,
        "segments/seg-0000000008.ts",
        PLAYLIST_KEY,
    ]
    assert [e.uri for e in harness.playlist().entries] == [
        "segments/seg-0000000000.ts",
        "segments/seg-0000000004.ts",
        "segments/seg-0000000008.ts",
    ]
    assert sorted(p.name for p in (sink.root / "segments").iterdir()) == [
        "seg-0000000000.ts",
        "seg-0000000004.ts",
        "seg-0000000008.ts",
    ]
    assert count_frames(sink.root / PLAYLIST_KEY) == 9


@pytest.mark.asyncio
async def test_timelapse_handler_close_ends_playlist_when_nothing_is_pending(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, segment_frames=5, sink=FlakySink(tmp_path / "out"))
    await harness.init()
    for event in harness.photo_events(10):
        await harness.invoke(event)
    assert harness.playlist().ended is False

    await harness.shutdown()

    playlist = harness.playlist()
    assert [e.uri for e in playlist.entries] == [
        "segments/seg-0000000000.ts",
        "segments/seg-0000000005.ts",
    ]
    assert playlist.ended is True
    assert harness.sink.puts.count(PLAYLIST_KEY) == 3


@pytest.mark.asyncio
async def test_timelapse_handler_bad_input_raises_and_keeps_the_buffer(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, segment_frames=30, sink=FlakySink(tmp_path / "out"))
    await harness.init()
    events = harness.photo_events(3)
    for event in events:
        await harness.invoke(event)
    png = harness.source / BUCKET / "not-a-jpeg.jpg"
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    (harness.source / BUCKET / "cut.jpg").write_bytes(
        (harness.source / BUCKET / "camera-1" / "frame-000001.jpg").read_bytes()[:500]
    )

    with pytest.raises(EventError, match="not an S3 event notification"):
        await harness.invoke({"photo": "frame.jpg"})
    with pytest.raises(
        PhotoError, match=r"s3://timelapse-photos/gone\.jpg does not exist"
    ):
        await harness.invoke(s3_put_event(BUCKET, "gone.jpg", b""))
    with pytest.raises(PhotoError, match="is not a JPEG photo"):
        await harness.invoke(s3_put_event(BUCKET, "not-a-jpeg.jpg", b""))
    with pytest.raises(PhotoError, match="is a damaged JPEG"):
        await harness.invoke(s3_put_event(BUCKET, "cut.jpg", b""))
    with pytest.raises(PhotoError, match="cannot stand for a file"):
        await harness.invoke(s3_put_event(BUCKET, "../../etc/passwd", b""))

    # A record that fails spoils its whole event: the good record is not kept.
    mixed = {
        "Records": events[0]["Records"]
        + s3_put_event(BUCKET, "gone.jpg", b"")["Records"]
    }
    with pytest.raises(PhotoError):
        await harness.invoke(mixed)

    deleted = json.loads(json.dumps(events[0]))
    deleted["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert await harness.invoke(deleted) == {"frames": 3, "pending": 3}


@pytest.mark.asyncio
async def test_timelapse_handler_new_process_continues_the_video(
    tmp_path: Path,
) -> None:
    first = Harness(tmp_path, segment_frames=5, sink=FlakySink(tmp_path / "out"))
    await first.init()
    for event in first.photo_events(7):
        await first.invoke(event)
    await first.shutdown()
    assert first.playlist().ended is True

    second = Harness(tmp_path, segment_frames=5, sink=FlakySink(tmp_path / "out"))
    await second.init()
    for event in second.photo_events(6, start=7):
        await second.invoke(event)

    # Mid-way the stream is open again; the shutdown ends it once more.
    assert second.playlist().ended is False
    await second.shutdown()

    assert [e.uri for e in second.playlist().entries] == [
        "segments/seg-0000000000.ts",
        "segments/seg-0000000005.ts",
        "segments/seg-0000000007.ts",
        "segments/seg-0000000012.ts",
    ]
    playlist_path = second.sink.root / PLAYLIST_KEY
    assert inspect_video(playlist_path).frames_per_segment == (5, 2, 5, 1)
    assert hls_timestamps(playlist_path) == pytest.approx([i / 30 for i in range(13)])


@pytest.mark.asyncio
async def test_timelapse_handler_before_init_says_so(tmp_path: Path) -> None:
    env = {"TIMELAPSE_SOURCE_ROOT": str(tmp_path), "TIMELAPSE_OUTPUT": str(tmp_path)}
    handler = TimelapseHandler(environ=env)

    with pytest.raises(RuntimeError, match=r"init\(\) has not run"):
        await handler.handle(s3_put_event(BUCKET, "a.jpg", b""), NO_CONTEXT)
    await handler.close()


def test_timelapse_handler_reads_its_policy_from_the_environment(
    tmp_path: Path,
) -> None:
    env = {
        "TIMELAPSE_SOURCE_ROOT": str(tmp_path),
        "TIMELAPSE_OUTPUT": str(tmp_path),
        "TIMELAPSE_SEGMENT_FRAMES": "12",
    }

    handler = TimelapseHandler(environ=env)

    assert handler.flush_policy == FlushPolicy(every=12, on_shutdown=True)
    assert TimelapseHandler.flush_policy == FlushPolicy(every=30, on_shutdown=True)
    with pytest.raises(TimelapseConfigError, match="TIMELAPSE_SOURCE_ROOT is not set"):
        TimelapseHandler(environ={})


@pytest.mark.asyncio
async def test_timelapse_handler_continues_after_replayed_frames(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, segment_frames=5, sink=FlakySink(tmp_path / "out"))
    events = harness.photo_events(2, start=3)
    # What a journal replay leaves in the buffer before init: three frames
    # that a killed process had encoded and acknowledged.
    buffer = harness.handler.state.buffer("packets")
    for packet in encode(3, keyint=5):
        buffer.append(packet, size=len(packet.data))
    await harness.init()

    results = [await harness.invoke(event) for event in events]
    await harness.shutdown()

    assert results == [{"frames": 1, "pending": 4}, {"frames": 2, "pending": 5}]
    playlist_path = harness.sink.root / PLAYLIST_KEY
    assert [e.uri for e in harness.playlist().entries] == ["segments/seg-0000000000.ts"]
    assert inspect_video(playlist_path).frames_per_segment == (5,)
    assert hls_timestamps(playlist_path) == pytest.approx([i / 30 for i in range(5)])


@pytest.mark.asyncio
async def test_timelapse_handler_missing_playlist_starts_a_new_video(
    tmp_path: Path,
) -> None:
    sink = FlakySink(tmp_path / "out")

    with pytest.raises(MissingKeyError):
        await sink.get(PLAYLIST_KEY)
    harness = Harness(tmp_path, segment_frames=5, sink=sink)
    await harness.init()

    assert len(harness.handler.playlist) == 0


def test_ffprobe_agrees_with_pyav_on_frame_count(tmp_path: Path) -> None:
    packets = encode(10, keyint=5)
    segments = tmp_path / "segments"
    segments.mkdir()
    playlist = HlsPlaylist()
    for start in (0, 5):
        name = f"segments/seg-{start:010d}.ts"
        (tmp_path / name).write_bytes(
            mux_segment(packets[start : start + 5], fps=30, width=W, height=H)
        )
        playlist.add(name, 5 / 30)
    playlist.ended = True
    (tmp_path / PLAYLIST_KEY).write_text(playlist.render())

    assert count_frames(tmp_path / PLAYLIST_KEY) == 10
    assert hls_timestamps(tmp_path / PLAYLIST_KEY) == pytest.approx(
        [i / 30 for i in range(10)]
    )
    probed = ffprobe_frames(tmp_path / PLAYLIST_KEY)
    if probed is None:
        pytest.skip("ffprobe is not installed; PyAV's count above still ran")
    assert probed == 10


def test_hls_timestamps_refuses_a_live_playlist_instead_of_waiting(
    tmp_path: Path,
) -> None:
    (tmp_path / "seg.ts").write_bytes(
        mux_segment(encode(3, keyint=3), fps=30, width=W, height=H)
    )
    live = HlsPlaylist()
    live.add("seg.ts", 0.1)
    (tmp_path / PLAYLIST_KEY).write_text(live.render())

    with pytest.raises(ValueError, match="no #EXT-X-ENDLIST"):
        hls_timestamps(tmp_path / PLAYLIST_KEY)
    assert inspect_video(tmp_path / PLAYLIST_KEY).timestamps == pytest.approx(
        [0, 1 / 30, 2 / 30]
    )


# -- end to end, through the emulator over real HTTP ---------------------------


@pytest.mark.slow
@pytest.mark.asyncio
async def test_timelapse_through_emulator_60_photos_make_60_frames(
    tmp_path: Path,
) -> None:
    from statefulrt.emulator import Emulator

    source, video = tmp_path / "s3", tmp_path / "video"
    keys = write_photos(
        source, 60, bucket=BUCKET, sequence=PhotoSequence(width=W, height=H)
    )
    events = [
        s3_put_event(BUCKET, key, (source / BUCKET / key).read_bytes(), sequence=i)
        for i, key in enumerate(keys)
    ]
    env = {
        "TIMELAPSE_SOURCE_ROOT": str(source),
        "TIMELAPSE_OUTPUT": str(video),
        "TIMELAPSE_SEGMENT_FRAMES": "30",
        "TIMELAPSE_SIZE": f"{W}x{H}",
        "STATEFULRT_JOURNAL_DIR": str(tmp_path),
    }
    command = [
        sys.executable,
        "-m",
        "statefulrt",
        "statefulrt_timelapse.handler.TimelapseHandler",
    ]

    async with Emulator(
        command, timeout=10, memory_mb=512, env=env, cwd=tmp_path, report_stream=None
    ) as emulator:
        results = [(await emulator.invoke(event)).json() for event in events[:30]]
        # A bad event is a function error; the process and its buffer live on.
        bad = await emulator.invoke(s3_put_event(BUCKET, "camera-1/missing.jpg", b""))
        results += [(await emulator.invoke(event)).json() for event in events[30:]]
        await emulator.wait_idle()
        # Lambda's shutdown phase: SIGTERM, and the runtime ends the playlist.
        await emulator.shutdown()
        reports = emulator.reports
        starts = emulator.starts
        shutdowns = emulator.shutdowns

    assert results[0] == {"frames": 1, "pending": 1}
    assert results[29] == {"frames": 30, "pending": 30}
    assert results[30] == {"frames": 31, "pending": 1}
    assert results[-1] == {"frames": 60, "pending": 30}
    assert bad.function_error == "Unhandled"
    assert bad.json()["errorType"] == "PhotoError"
    assert "camera-1/missing.jpg does not exist" in bad.json()["errorMessage"]
    assert starts == 1
    assert reports[0].init_duration_ms is not None
    assert [r.init_duration_ms for r in reports[1:]] == [None] * 60

    assert [(s.reason, s.signal, s.exit_code) for s in shutdowns] == [
        ("spindown", "SIGTERM", 0)
    ]
    report = inspect_video(video / PLAYLIST_KEY)
    assert report.ended is True
    assert report.frames == 60
    assert report.frames_per_segment == (30, 30)
    # Ended, so FFmpeg's HLS demuxer reads it to the end as a player would.
    assert hls_timestamps(video / PLAYLIST_KEY) == pytest.approx(
        [i / 30 for i in range(60)]
    )


HANGING_HANDLER = """
import asyncio

from statefulrt_timelapse.handler import TimelapseHandler


class HangingTimelapse(TimelapseHandler):
    async def handle(self, event, context):
        if event == {"hang": True}:
            await asyncio.sleep(30)
        return await super().handle(event, context)
"""


@pytest.mark.slow
@pytest.mark.asyncio
async def test_timelapse_through_emulator_timeout_loses_no_acknowledged_frame(
    tmp_path: Path,
) -> None:
    from statefulrt.emulator import Emulator

    (tmp_path / "hanging.py").write_text(HANGING_HANDLER)
    source, video = tmp_path / "s3", tmp_path / "video"
    sequence = PhotoSequence(width=W, height=H)
    keys = write_photos(source, 20, bucket=BUCKET, sequence=sequence)
    events = [
        s3_put_event(BUCKET, key, (source / BUCKET / key).read_bytes(), sequence=i)
        for i, key in enumerate(keys)
    ]
    env = {
        "TIMELAPSE_SOURCE_ROOT": str(source),
        "TIMELAPSE_OUTPUT": str(video),
        "TIMELAPSE_SEGMENT_FRAMES": "5",
        "TIMELAPSE_SIZE": f"{W}x{H}",
        "STATEFULRT_JOURNAL_DIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "statefulrt", "hanging.HangingTimelapse"]

    async with Emulator(
        command, timeout=1.5, memory_mb=512, env=env, cwd=tmp_path, report_stream=None
    ) as emulator:
        before = [(await emulator.invoke(event)).json() for event in events[:8]]
        # Three frames are acknowledged but only in the buffer when the
        # timeout kills the process.
        hung = await emulator.invoke({"hang": True})
        after = [(await emulator.invoke(event)).json() for event in events[8:]]
        await emulator.wait_idle()
        starts = emulator.starts

    assert before[-1] == {"frames": 8, "pending": 3}
    assert hung.json()["errorType"] == "Sandbox.Timedout"
    assert starts == 2
    # The new process replayed the three frames and carries on after them.
    assert after[0] == {"frames": 1, "pending": 4}
    assert after[-1] == {"frames": 12, "pending": 5}
    report = inspect_video(video / PLAYLIST_KEY)
    assert report.frames_per_segment == (5, 5, 5, 5)
    assert report.timestamps == pytest.approx([i / 30 for i in range(20)])


@pytest.mark.asyncio
async def test_timelapse_demo_bad_output_is_refused_before_any_work(
    tmp_path: Path,
) -> None:
    from statefulrt_timelapse.demo import DemoError, run_demo

    out = tmp_path / "demo"
    with pytest.raises(DemoError, match=r"s3://bucket/prefix, not '/videos'"):
        await run_demo(frames=2, out=out, output="/videos")
    with pytest.raises(DemoError, match="s3://bucket/prefix, not 's3:///day-1'"):
        await run_demo(frames=2, out=out, output="s3:///day-1")
    with pytest.raises(DemoError, match="endpoint applies to an s3:// output"):
        await run_demo(frames=2, out=out, endpoint="http://127.0.0.1:9")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_timelapse_demo_s3_output_holds_every_frame(
    tmp_path: Path, moto_url: str, aws_env: dict[str, str]
) -> None:
    pytest.importorskip("aiobotocore", reason="pip install 'statefulrt[s3]'")
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    from statefulrt_timelapse.demo import run_demo

    bucket = f"timelapse-{uuid.uuid4().hex[:12]}"
    output = f"s3://{bucket}/camera-1/day-1"

    # 20 frames in segments of 8: the last 4 reach the bucket only through
    # the shutdown flush, which also ends the playlist.
    result = await run_demo(
        frames=20,
        out=tmp_path / "demo",
        segment_frames=8,
        width=160,
        height=90,
        output=output,
        endpoint=moto_url,
    )

    assert (result.frames_sent, result.frames_in_video, result.segments) == (
        20,
        20,
        3,
    )
    local = tmp_path / "demo" / "video" / PLAYLIST_KEY
    assert result.video == str(local)
    report = inspect_video(local)
    assert report.frames_per_segment == (8, 8, 4)
    assert (report.width, report.height, report.ended) == (160, 90, True)
    assert hls_timestamps(local) == pytest.approx([i / 30 for i in range(20)])

    # What the bucket holds: the playlist the copy came from, and each
    # segment written once.
    async with get_session().create_client(
        "s3",
        endpoint_url=moto_url,
        config=AioConfig(s3={"addressing_style": "path"}),
    ) as s3:
        listing = await s3.list_objects_v2(Bucket=bucket)
        keys = sorted(item["Key"] for item in listing["Contents"])
        stored = await s3.get_object(
            Bucket=bucket, Key=f"camera-1/day-1/{PLAYLIST_KEY}"
        )
        async with stored["Body"] as body:
            playlist = await body.read()
        head = await s3.head_object(
            Bucket=bucket, Key="camera-1/day-1/segments/seg-0000000016.ts"
        )
    assert keys == [
        "camera-1/day-1/playlist.m3u8",
        "camera-1/day-1/segments/seg-0000000000.ts",
        "camera-1/day-1/segments/seg-0000000008.ts",
        "camera-1/day-1/segments/seg-0000000016.ts",
    ]
    assert playlist == local.read_bytes()
    assert playlist.endswith(b"#EXT-X-ENDLIST\n")
    assert head["ContentType"] == "video/mp2t"


@pytest.mark.slow
def test_timelapse_demo_prints_one_json_line(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "statefulrt_timelapse",
            "--frames",
            "20",
            "--segment-frames",
            "10",
            "--size",
            f"{W}x{H}",
            "--out",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    (line,) = completed.stdout.splitlines()
    result = json.loads(line)
    assert sorted(result) == [
        "cold_ms",
        "frames_in_video",
        "frames_sent",
        "segments",
        "video",
        "warm_p50_ms",
    ]
    assert (result["frames_sent"], result["frames_in_video"], result["segments"]) == (
        20,
        20,
        2,
    )
    assert result["video"] == str(tmp_path / "demo" / "video" / PLAYLIST_KEY)
    assert result["cold_ms"] > 0
    assert result["warm_p50_ms"] > 0
    assert "START RequestId" in completed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "0"], "--frames must be 1 to 100000, not 0"),
        (["--frames", "100001"], "--frames must be 1 to 100000, not 100001"),
        (["--size", "100000x100000"], "--size sides must be 2 to 3840 pixels"),
        (["--seed", "-1"], "--seed must be 0 or more, not -1"),
    ],
)
def test_timelapse_demo_refuses_out_of_range_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from statefulrt_timelapse.__main__ import main

    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err
