"""FileSource and Mp4Sink: decoding, error messages, timestamps, audio remux, temp files.

Small clips are generated with PyAV inside ``tmp_path``; only the round trip of the
sample video touches a real file.
"""

from __future__ import annotations

import errno
import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo.errors import InputError, OutputError
from camvideo.sinks import Mp4Sink
from camvideo.sources import VIDEO_EXTENSIONS, FileSource, find_videos
from camvideo.types import VideoInfo

SAMPLE = Path(__file__).resolve().parent.parent / "sample_videos" / "big_buck_bunny.mp4"

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# -- helpers ------------------------------------------------------------------------


def quadrants(width: int = 64, height: int = 32) -> np.ndarray:
    """An image no rotation or mirror maps onto itself: red | green over blue | white."""
    img = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    img[:h, :w], img[:h, w:], img[h:, :w], img[h:, w:] = RED, GREEN, BLUE, WHITE
    return img


def make_clip(
    path: Path,
    images: list[np.ndarray] | None = None,
    *,
    n: int = 10,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, 25),
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    rotation: tuple[int, bool] | None = None,
) -> list[int]:
    """Encode ``images`` (default: ``n`` distinct frames) and return the pts written."""
    if images is None:
        images = []
        for i in range(n):
            img = np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8)
            img[:, : i % size[0]] = RED
            images.append(img)
    pts = list(range(len(images))) if pts is None else pts
    with av.open(str(path), "w", container_options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = images[0].shape[1], images[0].shape[0]
        stream.pix_fmt = pix_fmt
        stream.time_base = stream.codec_context.time_base = time_base
        stream.codec_context.options = options or {}
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1])
        for image, stamp in zip(images, pts):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return pts


def decoded_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[tuple[int | None, int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, p.stream.index, bytes(p)) for p in c.demux(*c.streams.audio) if p.size]


def partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


def assert_one_line(err: pytest.ExceptionInfo, name: str) -> None:
    message = str(err.value)
    assert "\n" not in message and name in message, message


# -- FileSource on the sample ---------------------------------------------------------


def test_sample_info():
    with FileSource(SAMPLE) as src:
        info = src.info
    assert (info.width, info.height) == (1280, 720)
    assert info.fps == 25.0 and info.time_base == Fraction(1, 12800)
    assert info.frame_count == 132 and info.duration == pytest.approx(5.28)
    assert info.rotation == 0 and info.has_audio and info.codec == "h264"
    assert info.name == "big_buck_bunny.mp4"


def test_sample_frames_match_pyav():
    with av.open(str(SAMPLE)) as c:
        expected = [(f.pts, float(f.time)) for f in c.decode(video=0)]
    with FileSource(SAMPLE) as src:
        frames = list(src)
        assert src.frames_lost == 0
    assert len(frames) == 132
    assert [(f.pts, f.time) for f in frames] == expected
    assert [f.index for f in frames] == list(range(132))
    assert all(f.image.shape == (720, 1280, 3) and f.image.dtype == np.uint8 for f in frames[::20])
    assert frames[0].image.flags.c_contiguous
    captured = [f.captured for f in frames]
    assert captured == sorted(captured) and captured[0] > 0


def test_iterating_again_starts_over():
    with FileSource(SAMPLE) as src:
        first = [f.pts for _, f in zip(range(5), src)]
        again = [f.pts for _, f in zip(range(5), src)]
    assert first == again == [0, 512, 1024, 1536, 2048]


def test_rgb_channel_order(tmp_path):
    path = tmp_path / "rgb.mp4"
    colours = [RED, GREEN, BLUE]
    make_clip(path, [np.full((48, 64, 3), c, np.uint8) for c in colours])
    with FileSource(path) as src:
        frames = list(src)
    assert len(frames) == 3
    for frame, colour in zip(frames, colours):
        centre = frame.image[24, 32].astype(int)
        assert np.abs(centre - colour).max() <= 4, (centre, colour)


# -- errors ---------------------------------------------------------------------------


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("missing.mp4", None, "no such file"),
        ("empty.mp4", lambda p: p.write_bytes(b""), "empty"),
        ("random.mp4", lambda p: p.write_bytes(np.random.default_rng(0).bytes(20000)), "not a video file"),
        ("notes.txt", lambda p: p.write_text("hello\nworld\n" * 50), "text file"),
        ("notes.mp4", lambda p: p.write_text("hello\nworld\n" * 50), "not a video file"),
        ("song.m4a", _audio_only, "no video stream"),
        ("folder.mp4", lambda p: p.mkdir(), "folder"),
    ],
)
def test_bad_inputs_raise_one_line_input_error(tmp_path, name, make, words):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(InputError) as err:
        FileSource(path)
    assert_one_line(err, name)
    assert words in str(err.value)


@pytest.mark.parametrize("codec, ext, pix_fmt", [("libx264", "mp4", "yuv420p"), ("mjpeg", "avi", "yuvj420p")])
def test_damaged_packet_is_skipped(tmp_path, codec, ext, pix_fmt):
    path = tmp_path / f"damaged.{ext}"
    written = make_clip(path, n=30, codec=codec, pix_fmt=pix_fmt, options={"g": "10"})
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    with av.open(str(path)) as c:
        good = [f.pts for f in c.decode(video=0)]
    assert len(packets) == len(good) == len(written) == 30
    pos, size = packets[15]  # a P-frame in the middle: flip its payload, keep its header
    data = bytearray(path.read_bytes())
    data[pos + size // 4 : pos + size - 2] = bytes(b ^ 0xFF for b in data[pos + size // 4 : pos + size - 2])
    path.write_bytes(bytes(data))
    with FileSource(path) as src:
        frames = list(src)
        lost = src.frames_lost
    assert lost == 1 and len(frames) == 29
    assert set(f.pts for f in frames) < set(good)
    assert [f.index for f in frames] == list(range(29))


def test_truncated_file_yields_what_decodes(tmp_path):
    path = tmp_path / "cut.mp4"
    rng = np.random.default_rng(1)  # noise: every frame is big, so the cut is mid-stream
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40)]
    make_clip(path, images, container_options={"movflags": "+faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with FileSource(path) as src:
        assert src.info.frame_count == 40
        frames = list(src)
        lost = src.frames_lost
    assert 10 < len(frames) < 40
    assert lost == 40 - len(frames)


@pytest.mark.parametrize(
    "codec, ext, pix_fmt",
    [
        ("libx264", "mp4", "yuv444p"),
        ("libx264", "mp4", "yuv420p10le"),
        ("ffv1", "mkv", "gray"),
        ("ffv1", "mkv", "gray16le"),
        ("mjpeg", "avi", "yuvj422p"),  # full-range YUV
    ],
)
def test_pixel_formats_decode_to_rgb24(tmp_path, codec, ext, pix_fmt):
    path = tmp_path / f"{pix_fmt}.{ext}"
    make_clip(path, [np.full((48, 64, 3), 128, np.uint8)] * 3, codec=codec, pix_fmt=pix_fmt)
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).format.name == pix_fmt
    with FileSource(path) as src:
        frames = list(src)
    assert len(frames) == 3
    image = frames[0].image
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - 128).max() <= 3


@pytest.mark.parametrize("degrees, hflip", [(90, False), (-90, False), (180, False), (0, True), (90, True)])
def test_display_rotation_gives_upright_frames(tmp_path, degrees, hflip):
    path = tmp_path / "rotated.mp4"
    stored = quadrants(64, 32)
    make_clip(path, [stored] * 2, rotation=(degrees, hflip))
    # PyAV's set_display_rotation: counter-clockwise degrees, then the mirror.
    expected = np.rot90(stored, degrees // 90)
    expected = expected[:, ::-1] if hflip else expected
    with FileSource(path) as src:
        info, frames = src.info, list(src)
    assert (info.height, info.width) == expected.shape[:2] == frames[0].image.shape[:2]
    # clockwise quarter turns; a mirrored picture reports the turn of ffmpeg's transpose
    assert (
        info.rotation
        == {(90, False): 270, (-90, False): 90, (180, False): 180, (0, True): 0, (90, True): 90}[(degrees, hflip)]
    )
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 6


@pytest.mark.timeout(60)
def test_close_from_another_thread_stops_iteration():
    src = FileSource(SAMPLE)
    at_five, closed = threading.Event(), threading.Event()

    def close_at_five() -> None:
        if at_five.wait(30):
            src.close()
            closed.set()

    closer = threading.Thread(target=close_at_five, name="test-closer")
    closer.start()
    seen = 0
    for _ in src:  # 132 frames; the closer ends it after the 5th, whatever the machine's speed
        seen += 1
        if seen == 5:
            at_five.set()
            assert closed.wait(30), "close() from another thread did not return"
    closer.join(30)
    assert seen == 5  # no frame after close() returned
    assert list(src) == []  # and a closed source reads nothing more
    src.close()  # idempotent


# -- FileSource ranges (a Ray segment is one) ---------------------------------------------


def reference_frames(path: Path) -> list[tuple[int, float, np.ndarray]]:
    """Every frame of the file, decoded whole by PyAV: (pts, seconds, RGB) in presentation order."""
    with av.open(str(path)) as c:
        return [(f.pts, float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def test_range_gives_the_frames_from_start_to_before_end(tmp_path):
    clip = tmp_path / "gop.mp4"
    # B-frames (decode order is not presentation order), a keyframe every 8 frames, pts 2 apart
    make_clip(clip, n=40, pts=list(range(0, 80, 2)), time_base=Fraction(1, 50),
              options={"bf": "2", "g": "8", "keyint_min": "8", "sc_threshold": "0"})  # fmt: skip
    every = reference_frames(clip)
    assert [t for _, t, _ in every] == [i / 25 for i in range(40)]  # (the muxer's own time base)
    # (start, end) in seconds -> the indices [first, last] expected
    cases = [
        (Fraction(0), Fraction(80, 50), 0, 39),  # the whole file
        (Fraction(16, 50), Fraction(32, 50), 8, 15),  # a keyframe to the next: end excluded
        (Fraction(21, 50), Fraction(35, 50), 11, 17),  # between frames: the first at or after start
        (Fraction(26, 50), Fraction(27, 50), 13, 13),  # one frame, mid-GOP
        (Fraction(70, 50), None, 35, 39),  # to the end
        (0.5, 1.0, 13, 24),  # floats: 0.5 s is pts 25 (frame 13 at pts 26), 1.0 s is pts 50 (frame 25)
    ]
    for start, end, first, last in cases:
        with FileSource(clip, start=start, end=end, first_index=first) as source:
            for _ in range(2):  # a second iteration gives the same range again
                got = list(source)
                assert [f.index for f in got] == list(range(first, last + 1)), (start, end)
                for frame in got:
                    pts, seconds, image = every[frame.index]
                    assert frame.pts == pts and frame.time == seconds
                    assert np.array_equal(frame.image, image)


def test_range_with_nothing_in_it_is_one_input_error_and_releases_the_file(tmp_path):
    import psutil

    clip = tmp_path / "c.mp4"
    make_clip(clip, n=10)
    with pytest.raises(InputError) as err:
        FileSource(clip, start=5.0)  # 10 frames at 25 fps end at 0.36 s
    assert_one_line(err, "c.mp4")
    assert "no frame at or after 5.000 s" in str(err.value)
    # the failed open closed its container (the exception still holds the object)
    assert str(clip) not in {f.path for f in psutil.Process().open_files()}


def test_close_from_another_thread_stops_a_range():
    src = FileSource(SAMPLE, start=1.0, first_index=7)  # not the first frame: the range seeks
    at_five, closed = threading.Event(), threading.Event()

    def close_at_five() -> None:
        if at_five.wait(30):
            src.close()
            closed.set()

    closer = threading.Thread(target=close_at_five, name="test-closer")
    closer.start()
    seen = []
    for frame in src:
        seen.append(frame.index)
        if len(seen) == 5:
            at_five.set()
            assert closed.wait(30), "close() from another thread did not return"
    closer.join(30)
    assert seen == [7, 8, 9, 10, 11]  # no frame after close() returned
    assert list(src) == []


def test_find_videos(tmp_path):
    for name in ["b.MKV", "a.mp4", "notes.txt", ".a.mp4.partial-1234.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.mp4").write_bytes(b"x")
    assert find_videos([tmp_path]) == [tmp_path / "a.mp4", tmp_path / "b.MKV"]
    assert find_videos([tmp_path / "notes.txt", tmp_path / "a.mp4", tmp_path]) == [
        tmp_path / "notes.txt",
        tmp_path / "a.mp4",
        tmp_path / "b.MKV",
    ]
    assert {".mp4", ".mov", ".mkv", ".avi", ".webm", ".ts"} <= VIDEO_EXTENSIONS
    with pytest.raises(InputError) as err:
        find_videos([tmp_path / "nope.mp4"])
    assert_one_line(err, "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as err:
        find_videos([tmp_path / "empty"])
    assert_one_line(err, "empty")


# -- Mp4Sink ----------------------------------------------------------------------------


def transcode(source: Path, target: Path, *, audio: bool = True, preset: str = "ultrafast") -> FileSource:
    src = FileSource(source)
    with src, Mp4Sink(target, src.info, audio=source if audio else None, preset=preset) as sink:
        for frame in src:
            sink.encode(frame.image, frame.pts, frame.time)
    assert sink.frames_written == len(decoded_times(source))
    return src


def test_sample_round_trip_keeps_timestamps_and_audio(tmp_path):
    target = tmp_path / "out.mp4"
    transcode(SAMPLE, target)
    assert partials(tmp_path) == []
    assert decoded_times(target) == decoded_times(SAMPLE)  # 132 frames, same seconds
    with av.open(str(target)) as c:
        video = c.streams.video[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 1280, 720)
        assert video.codec_context.pix_fmt == "yuv420p" and video.frames == 132
        assert len(c.streams.audio) == 1 and c.streams.audio[0].codec_context.name == "aac"
        kinds = "".join("va"[p.stream.index] for p in c.demux() if p.size)
    source_audio, output_audio = audio_packets(SAMPLE), audio_packets(target)
    assert len(output_audio) == len(source_audio) == 249
    assert [(p, b) for p, _, b in output_audio] == [(p, b) for p, _, b in source_audio]
    # interleaved by time, not all audio at the end
    assert "a" in kinds[:20] and "v" in kinds[-20:]
    assert target.read_bytes().find(b"moov") < target.read_bytes().find(b"mdat")  # faststart


@pytest.mark.parametrize(
    "name, time_base, stamps",
    [
        # Matroska counts in milliseconds; the MP4 written counts in 1/16000 s (the
        # muxer scales small time bases up), so this also checks the conversion.
        ("vfr.mkv", Fraction(1, 1000), [0, 40, 50, 130, 131, 200, 420, 433, 500, 777, 1000, 1001]),
        # MPEG-TS starts anywhere on a 90 kHz clock: the MP4's start offset must not
        # be rounded to the millisecond.
        ("offset.ts", Fraction(1, 90000), [133127 + 3600 * i + 7 * i * i for i in range(12)]),
    ],
)
def test_variable_frame_rate_round_trip(tmp_path, name, time_base, stamps):
    source, target = tmp_path / name, tmp_path / "out.mp4"
    make_clip(source, n=len(stamps), pts=stamps, time_base=time_base, options={"bf": "2"})
    expected = [float(s * time_base) for s in stamps]
    assert decoded_times(source) == expected
    src = transcode(source, target, audio=False, preset="veryfast")
    assert src.info.time_base == time_base
    assert decoded_times(target) == expected
    with av.open(str(target)) as c:  # B-frames reorder packets; timestamps still survive
        assert c.streams.video[0].codec_context.has_b_frames
        packets = [(p.pts, p.dts) for p in c.demux(video=0) if p.size]
    assert any(pts != dts for pts, dts in packets)


def test_every_audio_stream_is_copied_unless_mp4_cannot_hold_it(tmp_path):
    audio, target = tmp_path / "audio.nut", tmp_path / "out.mp4"  # NUT holds any codec
    with av.open(str(audio), "w") as out:
        streams = [out.add_stream(codec, rate=8000) for codec in ("aac", "pcm_mulaw", "libopus")]
        streams[2].rate = 48000
        for stream in streams:
            stream.layout = "mono"
        for stream in streams:
            fmt, size = stream.format.name, stream.codec_context.frame_size or 160
            dtype = np.float32 if fmt.startswith("flt") else np.int16
            for i in range(12):
                samples = (np.sin(np.arange(size) * 0.1 + i) * (0.3 if dtype == np.float32 else 9000)).astype(dtype)
                frame = av.AudioFrame.from_ndarray(samples[None], format=fmt, layout="mono")
                frame.sample_rate, frame.pts = stream.rate, i * size
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
    make_clip(tmp_path / "video.mp4", n=10)
    src = FileSource(tmp_path / "video.mp4")
    with src, Mp4Sink(target, src.info, audio=audio, preset="ultrafast") as sink:
        for frame in src:
            sink.encode(frame.image, frame.pts, frame.time)
    with av.open(str(target)) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["aac", "opus"]  # no G.711 in MP4
    source, copied = audio_packets(audio), audio_packets(target)
    keep = {0: 1, 2: 2}  # source stream index -> output stream index
    expected = sorted((keep[i], pts, data) for pts, i, data in source if i in keep)
    assert {i for i, _, _ in expected} == {1, 2} and len(expected) >= 12
    assert sorted((i, pts, data) for pts, i, data in copied) == expected


@pytest.mark.parametrize("suffix, kept", [(".mov", False), (".mkv", True), (".mp4", True)])
def test_audio_the_output_container_cannot_hold_is_left_out_with_a_warning(tmp_path, caplog, suffix, kept):
    """H.264 + Opus source: MOV cannot hold Opus, so the .mov keeps the video and drops the
    audio with a warning (it used to fail the whole video); MP4 and Matroska keep it."""
    source, target = tmp_path / "opus.mkv", tmp_path / f"out{suffix}"
    with av.open(str(source), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream("libopus", rate=48000)
        audio.layout = "mono"
        size = 960
        for i in range(10):
            image = np.full((32, 32, 3), i * 20, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            samples = (np.sin(np.arange(size) * 0.05 + i) * 0.3).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * size
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())
    src = FileSource(source)
    with caplog.at_level("WARNING"), src, Mp4Sink(target, src.info, audio=source, preset="ultrafast") as sink:
        for frame in src:
            sink.encode(frame.image, frame.pts, frame.time)
    with av.open(str(target)) as c:
        assert len(c.streams.video) == 1 and c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == 10
        assert [s.codec_context.name for s in c.streams.audio] == (["opus"] if kept else [])
    warned = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert (warned == []) if kept else (len(warned) == 1 and "opus" in warned[0] and "mov" in warned[0])
    if kept:
        assert sorted(b for _, _, b in audio_packets(target)) == sorted(b for _, _, b in audio_packets(source))


def test_pts_derived_from_time_when_missing(tmp_path):
    target = tmp_path / "out.mp4"
    info = VideoInfo(width=32, height=32, fps=10.0, time_base=Fraction(1, 1000))
    times = [0.0, 0.1, 0.25, 0.3, 0.3, 0.9]  # a repeated time is nudged by one tick
    with Mp4Sink(target, info, preset="ultrafast") as sink:
        for t in times:
            sink.encode(np.zeros((32, 32, 3), np.uint8), None, t)
    assert decoded_times(target) == [0.0, 0.1, 0.25, 0.3, 0.301, 0.9]


@pytest.mark.parametrize("width, height", [(641, 479), (2, 2), (3, 5), (64, 48)])
def test_frame_sizes_are_padded_to_even(tmp_path, width, height):
    target = tmp_path / "odd.mp4"
    info = VideoInfo(width=width, height=height, fps=25.0, time_base=Fraction(1, 25))
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :] = BLUE
    if width >= 16:  # tiny frames share one chroma sample: keep them one colour
        image[: height // 2, : width // 2] = RED
    with Mp4Sink(target, info, preset="ultrafast", crf=0) as sink:
        for i in range(3):
            sink.encode(image, i, i / 25)
    assert sink.frames_written == 3
    with FileSource(target) as src:
        frames = list(src)
    even = (height + height % 2, width + width % 2, 3)
    assert len(frames) == 3 and frames[0].image.shape == even
    decoded = frames[0].image.astype(int)
    # the picture is where it was; the added row/column repeats the edge (blue)
    assert np.abs(decoded[:height, :width] - image).mean() < 6
    assert np.abs(decoded[-1, -1] - BLUE).max() < 12


def test_side_by_side_size_comes_from_first_image(tmp_path):
    info = VideoInfo(width=32, height=24, fps=25.0, time_base=Fraction(1, 25))
    sink = Mp4Sink(tmp_path / "wide.mp4", info, preset="ultrafast")
    sink.encode(np.zeros((24, 64, 3), np.uint8), 0, 0.0)
    with pytest.raises(ValueError):
        sink.encode(np.zeros((24, 32, 3), np.uint8), 1, 0.04)
    sink.close()
    with av.open(str(tmp_path / "wide.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 24)


def test_temp_file_is_hidden_and_removed(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    info = VideoInfo(width=32, height=32, fps=25.0, time_base=Fraction(1, 25))
    sink = Mp4Sink(target, info, preset="ultrafast")
    for i in range(40):  # the file appears with the first packet out of the encoder
        sink.encode(np.zeros((32, 32, 3), np.uint8), i, i / 25)
    (temp,) = partials(tmp_path)
    assert temp.startswith(".out.mp4.partial-") and temp.endswith(".mp4")
    sink.abort()
    sink.abort()  # idempotent
    assert partials(tmp_path) == [] and target.read_bytes() == b"previous result"

    # an exception inside the block aborts; the target is untouched
    with pytest.raises(RuntimeError, match="boom"):
        with Mp4Sink(target, info, preset="ultrafast") as sink:
            sink.encode(np.zeros((32, 32, 3), np.uint8), 0, 0.0)
            raise RuntimeError("boom")
    assert partials(tmp_path) == [] and target.read_bytes() == b"previous result"

    # Ctrl-C keeps what was written so far
    with pytest.raises(KeyboardInterrupt):
        with Mp4Sink(target, info, preset="ultrafast") as sink:
            for i in range(4):
                sink.encode(np.zeros((32, 32, 3), np.uint8), i, i / 25)
            raise KeyboardInterrupt
    assert partials(tmp_path) == [] and len(decoded_times(target)) == 4
    assert sink.close() == target  # already closed: returns the path again


def test_close_without_frames_is_an_output_error(tmp_path):
    info = VideoInfo(width=32, height=32, fps=25.0, time_base=Fraction(1, 25))
    sink = Mp4Sink(tmp_path / "none.mp4", info)
    with pytest.raises(OutputError) as err:
        sink.close()
    assert_one_line(err, "none.mp4")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_an_output_error(tmp_path):
    info = VideoInfo(width=32, height=32, fps=25.0, time_base=Fraction(1, 25))
    with pytest.raises(OutputError) as err:
        Mp4Sink(tmp_path / "no" / "such" / "out.mp4", info)
    assert_one_line(err, "out.mp4")
    assert "does not exist" in str(err.value)


def test_unreadable_audio_source_is_an_input_error(tmp_path):
    info = VideoInfo(width=32, height=32, fps=25.0, time_base=Fraction(1, 25))
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(2).bytes(5000))
    with pytest.raises(InputError) as err:
        Mp4Sink(tmp_path / "out.mp4", info, audio=tmp_path / "noise.mp4")
    assert_one_line(err, "noise.mp4")
    assert partials(tmp_path) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_is_an_output_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    info = VideoInfo(width=32, height=32, fps=25.0, time_base=Fraction(1, 25))
    with pytest.raises(OutputError) as err:
        Mp4Sink(folder / "out.mp4", info)
    assert "not writable" in str(err.value)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to fake a full disk")
@pytest.mark.parametrize("frames", [60, 2])  # fails in write(); fails only in close()
def test_disk_full_aborts_with_output_error(tmp_path, monkeypatch, frames):
    # The temp name is made predictable and pre-linked to /dev/full, whose writes fail
    # with ENOSPC: the real FFmpeg write path sees a full disk.
    import camvideo.sinks.mp4 as sinks

    monkeypatch.setattr(sinks.secrets, "token_hex", lambda n: "deadbeef")
    link = tmp_path / ".out.mp4.partial-deadbeef.mp4"
    link.symlink_to("/dev/full")
    info = VideoInfo(width=64, height=64, fps=25.0, time_base=Fraction(1, 25))
    rng = np.random.default_rng(0)
    with pytest.raises(OutputError) as err:
        # veryfast's lookahead keeps 2 frames inside x264, so nothing reaches the disk
        # before close()
        with Mp4Sink(tmp_path / "out.mp4", info, preset="ultrafast" if frames > 2 else "veryfast") as sink:
            for i in range(frames):
                sink.encode(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), i, i / 25)
    assert_one_line(err, "out.mp4")
    assert "disk full" in str(err.value)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert ("cannot write" if frames == 60 else "cannot finish") in str(err.value)
    assert not os.path.lexists(link) and not (tmp_path / "out.mp4").exists()
