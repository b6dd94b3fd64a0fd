"""A corpus of hostile and unusual inputs, generated with PyAV and numpy (nothing downloaded).

Used by ``test_reliability.py`` (every case through the real CLI), ``test_fuzz.py`` (the
seed to mutate) and ``benchmarks/fuzz_atheris.py``. Every clip is tiny: a handful of
frames, so the whole corpus is made in about a second and annotated in well under a
minute on two CPU cores.

Each :class:`Case` says what must come of it: ``"ok"`` (an annotated MP4 with every
frame that decodes, at the source's timestamps) or ``"error"`` (one line naming the
file, containing ``words``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# -- clip makers ---------------------------------------------------------------------------------


def pattern(i: int, width: int, height: int) -> np.ndarray:
    """Frame ``i``: a gradient with a moving bar, so every frame differs and compresses a bit."""
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x + 9 * i) % 256
    img[..., 1] = (y + 5 * i) % 256
    img[..., 2] = 128
    bar = (i * 7) % max(1, width)
    img[:, bar : bar + max(1, width // 8)] = (255, 255, 0)
    return img


def write_clip(
    path: Path,
    *,
    n: int = 8,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, 25),
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    rotation: int | None = None,
    images: list[np.ndarray] | None = None,
    noise: bool = False,
) -> list[int]:
    """Encode ``n`` frames of ``size`` (width, height); returns the pts written."""
    width, height = size
    if images is None:
        rng = np.random.default_rng(n * 7919 + width)
        images = [
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if noise else pattern(i, width, height)
            for i in range(n)
        ]
    pts = list(range(len(images))) if pts is None else pts
    with av.open(str(path), "w", container_options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = stream.codec_context.time_base = time_base
        stream.codec_context.options = (
            {"preset": "ultrafast", **(options or {})} if codec == "libx264" else (options or {})
        )
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for image, stamp in zip(images, pts):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return pts


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _with_audio(path: Path) -> None:
    """Video and an AAC track in one MP4: the audio must be copied alongside."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.options = {"preset": "ultrafast"}
        audio = out.add_stream("aac", rate=8000)
        audio.layout = "mono"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(pattern(i, 64, 48), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        for i in range(4):
            samples = (0.2 * np.sin(np.arange(1024) * 0.05 + i)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())


def _two_video_streams(path: Path) -> None:
    """Two video streams of different sizes: the first one is annotated."""
    with av.open(str(path), "w") as out:
        streams = []
        for width, height in ((64, 48), (32, 32)):
            s = out.add_stream("ffv1", rate=25)
            s.width, s.height, s.pix_fmt = width, height, "yuv420p"
            streams.append(s)
        for i in range(6):
            for s in streams:
                frame = av.VideoFrame.from_ndarray(pattern(i, s.width, s.height), format="rgb24")
                frame.pts = i
                out.mux(s.encode(frame))
        for s in streams:
            out.mux(s.encode())


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _no_streams(path: Path) -> None:
    """A well-formed MP4 with an empty movie: ftyp + moov holding only mvhd."""
    mvhd = _box(
        b"mvhd",
        bytes(12) + struct.pack(">II", 1000, 0) + struct.pack(">IH", 0x10000, 0x100) + bytes(70) + struct.pack(">I", 2),
    )
    path.write_bytes(_box(b"ftyp", b"isom\0\0\2\0isomiso2mp41") + _box(b"moov", mvhd))


def _image(path: Path) -> None:
    import cv2

    cv2.imwrite(str(path), pattern(3, 64, 48)[..., ::-1])


def video_packets(path: Path) -> list[tuple[int, int]]:
    """(file offset, size) of every video packet, in file order."""
    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(video=0) if p.size]


def _flip(data: bytearray, pos: int, size: int) -> None:
    """Invert a packet's payload but its first bytes (the NAL/JPEG headers stay readable)."""
    start, stop = pos + max(4, size // 4), pos + size - 2
    data[start:stop] = bytes(b ^ 0xFF for b in data[start:stop])


def _bitflipped(path: Path) -> None:
    write_clip(path, n=20, options={"g": "10"}, noise=True)
    data = bytearray(path.read_bytes())
    packets = video_packets(path)
    for index in (12, 13):  # two P-frames in the middle of the second GOP
        _flip(data, *packets[index])
    path.write_bytes(bytes(data))


def _first_frames_broken_mjpeg(path: Path) -> None:
    """The first three JPEGs of an MJPEG AVI are garbage after their markers."""
    write_clip(path, n=10, codec="mjpeg", pix_fmt="yuvj420p", noise=True)
    data = bytearray(path.read_bytes())
    for pos, size in video_packets(path)[:3]:
        data[pos + 2 : pos + size] = bytes(size - 2)  # SOI kept, everything else zeroed
    path.write_bytes(bytes(data))


def _first_gop_broken_h264(path: Path) -> None:
    """The first keyframe of an H.264 MP4 is destroyed; the second GOP is intact."""
    write_clip(path, n=16, options={"g": "8", "keyint_min": "8", "sc_threshold": "0"}, noise=True)
    data = bytearray(path.read_bytes())
    pos, size = video_packets(path)[0]
    data[pos + 4 : pos + size] = bytes(size - 4)  # the length prefix kept, the NAL zeroed
    path.write_bytes(bytes(data))


def _truncated(
    fraction: float | None = None, *, at: str | None = None, faststart: bool = True
) -> Callable[[Path], None]:
    """A 30-frame MP4 cut at ``fraction`` of its size, or at a named place."""

    def make(path: Path) -> None:
        write_clip(path, n=30, noise=True, container_options={"movflags": "+faststart"} if faststart else {})
        data = path.read_bytes()
        moov, mdat = data.find(b"moov") - 4, data.find(b"mdat") - 4
        cut = {
            None: int(len(data) * (fraction or 0)),
            "in-ftyp": 11,
            "in-moov": moov + 40,
            "after-moov": mdat + 8,  # the index and the mdat header, not one frame
        }[at]
        path.write_bytes(data[:cut])

    return make


def size_change_ts(n: int = 6) -> bytes:
    """An MPEG-TS whose H.264 stream changes resolution midway: 64x48, then 32x32
    (two recordings back to back; what a fuzzer first found by flipping an SPS byte)."""
    parts = []
    for k, (width, height) in enumerate(((64, 48), (32, 32))):
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.options = {"preset": "ultrafast"}
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
                frame.pts = k * n + i
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        parts.append(buffer.getvalue())
    return b"".join(parts)


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


# -- the corpus ------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str  # file name inside the corpus folder
    make: Callable[[Path], None]
    expect: str  # "ok" or "error"
    words: str = ""  # for errors: in the one-line message
    frames: int | None = None  # for ok: the exact number of frames out (None: whatever decodes)
    size: tuple[int, int] | None = None  # for ok: the (width, height) of the output video
    lossy: bool | None = False  # frames are lost (damaged input), a warning counts them; None: may be
    in_folder: bool = True  # picked up by a folder run (a video file name suffix)


def _tall_column(path: Path) -> None:
    write_clip(path, n=3, size=(1, 1000), pix_fmt="yuv444p")


CASES: list[Case] = [
    # not videos at all
    Case("zero_bytes.mp4", _write(b""), "error", "empty"),
    Case("random_bytes.mp4", _write(np.random.default_rng(0).bytes(30_000)), "error", "not a video file"),
    Case("notes.txt", _write(b"hello, world\n" * 200), "error", "text file", in_folder=False),
    Case("text_named.mp4", _write(b"hello, world\n" * 200), "error", "not a video file"),
    Case("song.m4a", _audio_only, "error", "audio only", in_folder=False),
    Case("song_named.mp4", _audio_only, "error", "audio only"),
    Case("no_streams.mp4", _no_streams, "error", "no video stream"),
    Case("pipe.mp4", os.mkfifo, "error", "not a regular file", in_folder=False),  # FFmpeg would wait forever
    # an image is a one-frame video
    Case("picture.png", _image, "ok", frames=1, size=(64, 48), in_folder=False),
    # truncated: before the index there is nothing to read; after it, what is there is kept
    Case("cut_in_ftyp.mp4", _truncated(at="in-ftyp"), "error", "not a video file"),
    Case("cut_in_moov.mp4", _truncated(at="in-moov"), "error", ""),
    Case("cut_after_moov.mp4", _truncated(at="after-moov"), "error", "no video frame could be decoded"),
    Case("cut_at_half.mp4", _truncated(0.5), "ok", lossy=True),
    Case("cut_near_end.mp4", _truncated(0.97), "ok", lossy=True),
    Case("cut_moov_at_end.mp4", _truncated(0.8, faststart=False), "error", "not a video file"),
    # damaged inside
    Case("bitflipped.mp4", _bitflipped, "ok", lossy=None),  # H.264 conceals most of it
    Case("first_frames_broken.avi", _first_frames_broken_mjpeg, "ok", frames=7, lossy=True),
    Case("first_gop_broken.mp4", _first_gop_broken_h264, "ok", lossy=True),
    # sizes
    Case(
        "odd_641x479.mp4",
        lambda p: write_clip(p, n=3, size=(641, 479), pix_fmt="yuv444p"),
        "ok",
        frames=3,
        size=(642, 480),
    ),
    Case("tiny_2x2.mp4", lambda p: write_clip(p, n=4, size=(2, 2)), "ok", frames=4, size=(2, 2)),
    Case("column_1x1000.mp4", _tall_column, "ok", frames=3, size=(2, 1000)),
    Case("strip_4000x16.mp4", lambda p: write_clip(p, n=3, size=(4000, 16)), "ok", frames=3, size=(4000, 16)),
    Case("tower_16x4000.mp4", lambda p: write_clip(p, n=3, size=(16, 4000)), "ok", frames=3, size=(16, 4000)),
    Case("uhd_3840x2160.mp4", lambda p: write_clip(p, n=3, size=(3840, 2160)), "ok", frames=3, size=(3840, 2160)),
    Case("one_frame.mp4", lambda p: write_clip(p, n=1), "ok", frames=1, size=(64, 48)),
    # pixel formats
    Case("ten_bit.mp4", lambda p: write_clip(p, n=4, pix_fmt="yuv420p10le"), "ok", frames=4, size=(64, 48)),
    Case("four_four_four.mp4", lambda p: write_clip(p, n=4, pix_fmt="yuv444p"), "ok", frames=4, size=(64, 48)),
    Case("gray.mkv", lambda p: write_clip(p, n=4, codec="ffv1", pix_fmt="gray"), "ok", frames=4, size=(64, 48)),
    Case("gray16.mkv", lambda p: write_clip(p, n=4, codec="ffv1", pix_fmt="gray16le"), "ok", frames=4, size=(64, 48)),
    # timing and layout
    Case("phone_rotated.mp4", lambda p: write_clip(p, n=4, size=(64, 48), rotation=90), "ok", frames=4, size=(48, 64)),
    Case(
        "variable_rate.mkv",
        lambda p: write_clip(p, n=8, pts=[0, 40, 50, 130, 131, 300, 333, 1000], time_base=Fraction(1, 1000)),
        "ok",
        frames=8,
        size=(64, 48),
    ),
    Case("two_video_streams.mkv", _two_video_streams, "ok", frames=6, size=(64, 48)),
    Case("size_change.ts", lambda p: p.write_bytes(size_change_ts()), "ok", frames=12, size=(64, 48)),
    Case("with_audio.mp4", _with_audio, "ok", frames=10, size=(64, 48)),
    Case("ünïcödé name 猫 with spaces.mp4", lambda p: write_clip(p, n=3), "ok", frames=3, size=(64, 48)),
]

BY_NAME = {case.name: case for case in CASES}


def build(folder: Path, cases: list[Case] | None = None) -> dict[str, Path]:
    """Make every case in ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases or CASES:
        path = folder / case.name
        case.make(path)
        paths[case.name] = path
    return paths


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    return {p.name: checksum(p) for p in sorted(folder.iterdir()) if p.is_file()}


def partials(*folders: Path) -> list[Path]:
    """Temporary outputs left anywhere under ``folders``."""
    return [p for folder in folders for p in folder.rglob("*") if ".partial-" in p.name]


def small_mp4(n: int = 6, size: tuple[int, int] = (32, 24), gop: int = 3) -> bytes:
    """A small valid H.264 MP4 (the fuzzers' seed), as bytes."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "g": str(gop)}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i, *size), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buffer.getvalue()


# -- a tiny model, where the model does not matter ---------------------------------------------------


def tiny_net(classes: int = 4, seed: int = 0):
    """A GAP classifier small enough for thousands of frames a second on one core."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    ).eval()  # fmt: skip


def tiny_explainer(model=None, **kwargs):
    """An :class:`~camvideo.Explainer` on :func:`tiny_net`, 32-pixel inputs, on the CPU."""
    from camvideo import Explainer

    model = model if model is not None else tiny_net()
    names = [f"thing {i}" for i in range(model[-1].out_features)]
    return Explainer(model=model, method="cam", device="cpu", class_names=names, input_size=32, **kwargs)


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models on one intra-op thread: on a busy machine, waking a pool of threads for
    a 32-pixel convolution costs milliseconds, thirty times the work itself."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def count_hooks(model) -> int:
    """Forward, pre-forward and backward hooks registered anywhere in ``model``."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )  # fmt: skip


if __name__ == "__main__":  # pragma: no cover - `python tests/corpus.py DIR` to look at the files
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    for name, path in build(target).items():
        print(f"{os.path.getsize(path):>10}  {name}")
