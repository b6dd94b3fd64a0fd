"""Hardware decode (PyAV hwaccel, NVDEC) and encode (h264_nvenc), with their fallbacks.

On a machine without a GPU every hardware path must fall back to software without a
trace beyond a log line: the frames are byte-identical to software decoding and the
output is a valid libx264 MP4. The CUDA tests at the end run only where torch sees a
GPU (and the NVIDIA video libraries are installed); they skip cleanly elsewhere.
"""

from __future__ import annotations

import ctypes
import io
import logging
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest
import torch
from av.codec.hwaccel import hwdevices_available

from camvideo.errors import InputError, OutputError
from camvideo.options import X264_PRESETS
from camvideo.sinks import Mp4Sink, encoder_available, encoders
from camvideo.sources import FileSource
from camvideo.types import VideoInfo

SAMPLE = Path(__file__).resolve().parent.parent / "sample_videos" / "big_buck_bunny.mp4"
N_FRAMES = 10

CUDA = torch.cuda.is_available()


def _loadable(library: str) -> bool:
    """Whether a driver library FFmpeg loads at run time (dlopen) is installed."""
    try:
        ctypes.CDLL(library)
        return True
    except OSError:
        return False


# -- helpers ------------------------------------------------------------------------


def first_frames(source: FileSource, n: int = N_FRAMES) -> list:
    return [frame for _, frame in zip(range(n), source)]


def make_clip(path: Path, *, n: int = 12, size: tuple[int, int] = (64, 48), audio: bool = False) -> list[int]:
    """A small H.264 MP4 with variable frame spacing (and AAC audio); returns its pts."""
    time_base = Fraction(1, 1000)
    pts = [i * 40 + (i % 3) * 7 for i in range(n)]  # irregular gaps: a VFR clip
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.time_base = video.codec_context.time_base = time_base
        sound = out.add_stream("aac", rate=48000) if audio else None
        for i, stamp in enumerate(pts):
            image = np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8)
            image[:, : i * 4] = (255, 0, 0)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            samples = np.zeros((2, 1024), np.float32)
            for i in range(n * 2):
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = 48000, i * 1024
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())
    # The MP4 muxer picks its own track timescale: return the pts as stored.
    stored = decoded(path)[1]
    assert [Fraction(a, 1000) for a in pts] == [b * stored_time_base(path) for b in stored]
    return stored


def stored_time_base(path: Path) -> Fraction:
    with av.open(str(path)) as container:
        return container.streams.video[0].time_base


def transcode(source_path: Path, target: Path, **sink_options) -> tuple[Mp4Sink, FileSource]:
    """FileSource -> Mp4Sink, the way annotate uses them (audio copied when there is some)."""
    src = FileSource(source_path)
    audio = source_path if src.info.has_audio else None
    with src, Mp4Sink(target, src.info, audio=audio, preset="ultrafast", **sink_options) as sink:
        assert sink.encoder is None  # chosen at the first frame, when the size is known
        for frame in src:
            sink.encode(frame.image, frame.pts, frame.time)
    return sink, src


def decoded(path: Path) -> tuple[str, list[int], bool]:
    """(video codec, every video frame's pts, whether there is an audio stream)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts for frame in container.decode(stream)]
        return stream.codec_context.name, pts, bool(container.streams.audio)


def partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


def no_nvenc_here(width: int = 64, height: int = 48) -> bool:
    return not encoder_available("h264_nvenc", width, height)


# -- decoding: hwaccel and its fallback ---------------------------------------------


@pytest.mark.skipif(CUDA, reason="this machine can decode on CUDA: the fallback is not taken")
def test_cuda_decode_falls_back_to_identical_software_frames(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="camvideo.sources"), FileSource(SAMPLE, hwaccel="cuda") as hw:
        hw_frames = first_frames(hw)
        again = first_frames(hw)  # a second __iter__ rewinds
        assert (hw.hwaccel, hw.decoder, repr(hw)) == (None, "h264", f"FileSource({str(SAMPLE)!r})")
        hw_info = hw.info
    with FileSource(SAMPLE) as sw:
        sw_frames = first_frames(sw)
        assert (sw.hwaccel, sw.decoder) == (None, "h264")
        assert sw.info == hw_info

    assert len(hw_frames) == len(sw_frames) == N_FRAMES
    for a, b, c in zip(hw_frames, sw_frames, again):
        assert a.image.shape == b.image.shape == (720, 1280, 3)
        assert a.image.tobytes() == b.image.tobytes() == c.image.tobytes()
        assert a.pts == b.pts == c.pts and a.time == b.time
    assert [f.pts for f in sw_frames] == [i * 512 for i in range(N_FRAMES)]  # 25 fps in 1/12800

    records = [r for r in caplog.records if r.name == "camvideo.sources.file"]
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert records[0].levelno == logging.INFO
    assert "cuda" in message and "software" in message and "failed" in message
    assert "\n" not in message


def test_device_without_a_decoder_for_the_codec_reopens_in_software(caplog: pytest.LogCaptureFixture) -> None:
    # A device type this FFmpeg knows but has no H.264 decoder for: PyAV opens the
    # container with no device attached; FileSource notices and reports software.
    h264 = {c.device_type.name for c in av.Codec("h264", "r").hardware_configs}
    spare = [name for name in hwdevices_available() if name not in h264]
    if not spare:
        pytest.skip("every hardware device type of this FFmpeg build can decode H.264")
    with caplog.at_level(logging.INFO, logger="camvideo.sources"), FileSource(SAMPLE, hwaccel=spare[0]) as src:
        frames = first_frames(src, 3)
        assert (src.hwaccel, src.decoder) == (None, "h264")
    assert [f.pts for f in frames] == [0, 512, 1024]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(f"no {spare[0]} decoder for h264" in m for m in messages), messages


def test_failure_after_open_closes_the_device_container_and_retries(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulate a device that opens but decodes nothing: the hardware container must be
    # closed before the software one is opened, and the lost-frame count must not leak.
    path = tmp_path / "clip.mp4"
    pts = make_clip(path)
    opened: list[tuple[object, bool]] = []
    released: list[object] = []
    real_open, real_release, real_open_stream = av.open, FileSource._release, FileSource._open_stream

    def fake_open(*args, hwaccel=None, **kwargs):  # the device "works": open in software
        container = real_open(*args, **kwargs)
        opened.append((container, hwaccel is not None))
        return container

    def open_stream(self: FileSource, threads: str) -> None:
        if opened[-1][1]:
            self.frames_lost = 7
            raise InputError(f"{self.path}: no video frame could be decoded (h264 codec)")
        real_open_stream(self, threads)

    def release(self: FileSource) -> None:
        released.append(self._container)
        real_release(self)

    monkeypatch.setattr("camvideo.sources.file.av.open", fake_open)
    monkeypatch.setattr(FileSource, "_open_stream", open_stream)
    monkeypatch.setattr(FileSource, "_release", release)
    with caplog.at_level(logging.INFO, logger="camvideo.sources"), FileSource(path, hwaccel="cuda") as src:
        assert [o[1] for o in opened] == [True, False]
        assert released == [opened[0][0]]  # the device's container, closed before the retry
        assert src.frames_lost == 0 and src.hwaccel is None
        assert [f.pts for f in src] == pts
    assert any("first frame failed: no video frame could be decoded" in r.getMessage() for r in caplog.records)


def test_software_error_is_the_one_raised(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    with pytest.raises(InputError) as software:
        FileSource(text)
    with pytest.raises(InputError) as hardware:
        FileSource(text, hwaccel="cuda")
    assert str(hardware.value) == str(software.value)
    with pytest.raises(InputError, match="no such file"):
        FileSource(tmp_path / "missing.mp4", hwaccel="cuda")


def test_unknown_hwaccel_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hwaccel must be a hardware device type .*'nvdec'"):
        FileSource(SAMPLE, hwaccel="nvdec")  # FFmpeg calls it "cuda"
    with pytest.raises(ValueError, match="hwaccel"):
        FileSource(tmp_path / "missing.mp4", hwaccel="")  # checked before the file
    with pytest.raises(ValueError, match="threads"):
        FileSource(SAMPLE, threads="many", hwaccel="cuda")


# -- encoding: encoder choice and its fallback ---------------------------------------


def test_auto_encoder_picks_what_works_here(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "vfr.mp4"
    pts = make_clip(source, audio=True)
    with caplog.at_level(logging.INFO, logger="camvideo"):
        sink, _ = transcode(source, tmp_path / "out.mp4", encoder="auto")
    expected = "libx264" if no_nvenc_here() else "h264_nvenc"
    assert sink.encoder == expected
    assert sink.frames_written == len(pts)
    codec, out_pts, has_audio = decoded(tmp_path / "out.mp4")
    assert (codec, out_pts, has_audio) == ("h264", pts, True)  # VFR timestamps kept exactly
    infos = [r.getMessage() for r in caplog.records if r.name == "camvideo.sinks.encoders"]
    assert len(infos) == 1 and expected in infos[0], infos
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "camvideo.sinks.encoders")
    assert partials(tmp_path) == []


def test_libx264_is_the_default_and_uses_frame_threads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    info = VideoInfo(width=64, height=48, fps=25.0, time_base=Fraction(1, 25))
    with caplog.at_level(logging.DEBUG, logger="camvideo.sinks.encoders"):
        with Mp4Sink(tmp_path / "x.mp4", info, preset="ultrafast", threads=3) as sink:
            for i in range(5):
                sink.encode(np.full((48, 64, 3), i * 40, np.uint8), i, i / 25)
            codec = sink._video.codec_context
            assert (codec.thread_type.name, codec.thread_count) == ("FRAME", 3)
    assert sink.encoder == "libx264"
    assert [r for r in caplog.records if r.name == "camvideo.sinks.encoders"] == []  # nothing probed
    codec, pts, _ = decoded(tmp_path / "x.mp4")
    assert codec == "h264"
    assert [p * stored_time_base(tmp_path / "x.mp4") for p in pts] == [Fraction(i, 25) for i in range(5)]


@pytest.mark.skipif(not no_nvenc_here(), reason="NVENC works here: no fallback to test")
def test_explicit_nvenc_without_a_gpu_warns_and_uses_libx264(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "vfr.mp4"
    pts = make_clip(source)
    with caplog.at_level(logging.INFO, logger="camvideo"):
        sink, _ = transcode(source, tmp_path / "out.mp4", encoder="h264_nvenc")
    assert sink.encoder == "libx264"
    assert decoded(tmp_path / "out.mp4") == ("h264", pts, False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "h264_nvenc" in warnings[0] and "libx264" in warnings[0], warnings
    assert "\n" not in warnings[0]


@pytest.mark.skipif(not no_nvenc_here(), reason="NVENC works here: it would not fail to start")
def test_nvenc_failing_at_start_after_the_probe_rebuilds_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The probe said yes but the real open fails (a session limit reached in between):
    # the container is made again with libx264, audio included.
    monkeypatch.setattr("camvideo.sinks.mp4.choose_encoder", lambda *args, **kwargs: "h264_nvenc")
    source = tmp_path / "vfr.mp4"
    pts = make_clip(source, audio=True)
    with caplog.at_level(logging.WARNING, logger="camvideo.sinks"):
        sink, _ = transcode(source, tmp_path / "out.mp4", encoder="h264_nvenc")
    assert sink.encoder == "libx264"
    assert decoded(tmp_path / "out.mp4") == ("h264", pts, True)
    assert any("h264_nvenc failed to start" in r.getMessage() for r in caplog.records)
    assert partials(tmp_path) == []


def test_unknown_encoder_is_an_output_error_and_leaves_no_file(tmp_path: Path) -> None:
    info = VideoInfo(width=64, height=48, fps=25.0, time_base=Fraction(1, 25))
    target = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="encoder must be one of libx264, h264_nvenc, auto, not 'x265'"):
        Mp4Sink(target, info, encoder="x265")
    assert list(tmp_path.iterdir()) == []


def test_encoder_available_probes_by_encoding() -> None:
    assert encoder_available("libx264", 64, 64) is True
    assert encoder_available("libx264", 63, 47) is True  # padded to even, like Mp4Sink
    assert encoder_available("nonexistent_codec", 64, 64) is False
    assert encoder_available("aac", 64, 64) is False  # an encoder, but not a video one
    assert encoder_available.cache_info().currsize >= 3


# x264's presets, fastest to slowest, as `x264 --help` lists them (typed here, not imported).
X264_FASTEST_TO_SLOWEST = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip


def nvenc_options(crf: int, preset: str) -> dict[str, str]:
    """The options ``configure`` sets on an h264_nvenc stream (never opened: no GPU needed)."""
    with av.open(io.BytesIO(), "w", format="mp4") as out:
        stream = out.add_stream("h264_nvenc", rate=25)
        encoders.configure(stream, "h264_nvenc", crf=crf, preset=preset, threads=0)
        assert not stream.codec_context.bit_rate  # no bit rate cap (PyAV reads 0 as None)
        return dict(stream.codec_context.options)


def nvenc_refuses(options: dict[str, str]) -> list[str]:
    """What this PyAV build's h264_nvenc says about ``options``: FFmpeg parses them against
    the encoder's own option table before it looks for a GPU, so the "Error setting option"
    lines come out on any machine; an empty list means every value was accepted."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, av.open(io.BytesIO(), "w", format="mp4") as out:
            stream = out.add_stream("h264_nvenc", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.codec_context.options = options
            try:
                stream.codec_context.open()  # no GPU: fails after the options were applied
            except av.error.FFmpegError:
                pass
    finally:
        av.logging.set_level(level)
    return [message for _, _, message in logs if "Error setting option" in message]


def test_nvenc_presets_follow_x264_speed_order() -> None:
    """NVENC's presets run p1 (fastest, lowest quality) .. p7 (slowest, best quality) (NVIDIA's
    Video Codec SDK preset guide; FFmpeg's h264_nvenc -preset p1..p7). An x264 preset must map
    to one of them by the same intent: a slower x264 preset never gets a faster NVENC preset,
    the fastest maps to p1, the slowest to p7, and every NVENC level is reachable."""
    assert tuple(X264_PRESETS) == X264_FASTEST_TO_SLOWEST
    names = [nvenc_options(23, preset)["preset"] for preset in X264_FASTEST_TO_SLOWEST]
    assert all(name in {f"p{k}" for k in range(1, 8)} for name in names), names
    levels = [int(name[1:]) for name in names]
    assert levels == sorted(levels), names  # monotonic in x264's speed order
    assert levels[0] == 1 and levels[-1] == 7 and set(levels) == set(range(1, 8)), names
    assert levels[X264_FASTEST_TO_SLOWEST.index("veryslow")] == 7  # x264's slowest usable preset: NVENC's best


def test_nvenc_constant_quality_follows_crf() -> None:
    """x264's CRF and NVENC's constant-quality target share the 0..51 QP-like scale; FFmpeg's
    h264_nvenc does constant quality as ``rc=vbr`` with ``cq`` and no bit rate, and reads
    ``cq=0`` as "automatic", so x264's lossless CRF 0 must not become cq 0."""
    for crf in (1, 18, 23, 51):
        options = nvenc_options(crf, "medium")
        assert options["rc"] == "vbr" and int(options["cq"]) == crf, options
    assert int(nvenc_options(0, "medium")["cq"]) >= 1


def test_nvenc_accepts_the_options_we_set() -> None:
    # the probe can tell: values outside h264_nvenc's option table are refused by name
    assert nvenc_refuses({"preset": "p8"}) and nvenc_refuses({"cq": "52"}) and nvenc_refuses({"rc": "cbrx"})
    for preset in X264_FASTEST_TO_SLOWEST:
        for crf in (0, 23, 51):
            options = nvenc_options(crf, preset)
            assert set(options) == {"preset", "rc", "cq"}, options  # each a name h264_nvenc knows (above)
            assert nvenc_refuses(options) == [], (preset, crf, options)


# -- on a CUDA machine ---------------------------------------------------------------

needs_nvdec = pytest.mark.skipif(
    not CUDA or not _loadable("libnvcuvid.so.1"),
    reason="needs a CUDA GPU and the NVIDIA video decode library (libnvcuvid.so.1)",
)


@needs_nvdec
def test_cuda_decode_matches_software(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="camvideo.sources"), FileSource(SAMPLE, hwaccel="cuda") as hw:
        assert (hw.hwaccel, hw.decoder, hw.info.codec) == ("cuda", "h264 (cuda)", "h264"), caplog.text
        hw_frames = first_frames(hw)
        rewound = first_frames(hw)
    with FileSource(SAMPLE) as sw:
        sw_frames = first_frames(sw)
        assert sw.info == hw.info
    assert len(hw_frames) == len(sw_frames) == N_FRAMES
    for a, b, c in zip(hw_frames, sw_frames, rewound):
        assert a.image.shape == b.image.shape and a.pts == b.pts == c.pts
        # NVDEC is bit-exact H.264; the frames differ only through swscale's nv12 vs
        # yuv420p -> RGB paths, by a level or so.
        diff = np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).mean()
        assert diff <= 2.0, diff
        assert np.array_equal(a.image, c.image)


@pytest.mark.skipif(
    not CUDA or not _loadable("libnvidia-encode.so.1") or no_nvenc_here(256, 144),
    reason="needs an NVIDIA GPU with NVENC (the H100 has none) and libnvidia-encode.so.1",
)
def test_nvenc_output_keeps_frames_and_timestamps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "vfr.mp4"
    pts = make_clip(source, size=(256, 144), audio=True)
    with caplog.at_level(logging.WARNING):
        sink, _ = transcode(source, tmp_path / "out.mp4", encoder="h264_nvenc")
    assert sink.encoder == "h264_nvenc"
    assert decoded(tmp_path / "out.mp4") == ("h264", pts, True)
    assert [r for r in caplog.records if r.name.startswith("camvideo")] == []
