"""Build ``sample_videos/cat_and_coffee.mp4``: two CC0 photos moving across a plain canvas.

The photos are scikit-image's bundled ``skimage.data.chelsea()`` (Chelsea the cat, CC0 by
Stefan van der Walt) and ``skimage.data.coffee()`` (coffee cup, CC0 by Rachel Michetti).
For the first 2 s the cat slides left to right, for the next 2 s the coffee cup slides
right to left while drifting down, so a CAM has one moving ImageNet object to follow.

640x360, 30 fps, 120 frames, H.264 (libx264, crf 20, yuv420p, +faststart), no audio.
Deterministic: same inputs, same encoder build -> same bytes (x264 runs single-threaded).

    python benchmarks/make_sample_clip.py [OUTPUT]   # default: sample_videos/cat_and_coffee.mp4
"""

from __future__ import annotations

import argparse
import pathlib
from fractions import Fraction

import av
import cv2
import numpy as np
from skimage import data

WIDTH, HEIGHT, FPS = 640, 360, 30
SEGMENT_FRAMES = 60  # 2 s per photo
DEFAULT_OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "sample_videos" / "cat_and_coffee.mp4"


def _background() -> np.ndarray:
    """A neutral grey canvas with a soft vertical gradient (flat, so it encodes small)."""
    ramp = np.linspace(200, 168, HEIGHT, dtype=np.float32)[:, None, None]
    tint = np.array([1.0, 1.0, 0.97], dtype=np.float32)  # very slightly warm
    return np.broadcast_to(ramp * tint, (HEIGHT, WIDTH, 3)).round().astype(np.uint8).copy()


def _scaled(photo: np.ndarray, height: int) -> np.ndarray:
    width = round(photo.shape[1] * height / photo.shape[0])
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)


def _place(canvas: np.ndarray, photo: np.ndarray, x: float, y: float) -> np.ndarray:
    """Composite ``photo`` onto ``canvas`` with its top-left corner at sub-pixel (x, y)."""
    h, w = photo.shape[:2]
    shift = np.float32([[1, 0, x], [0, 1, y]])
    moved = cv2.warpAffine(photo, shift, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpAffine(np.ones((h, w), np.float32), shift, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
    out = canvas.astype(np.float32) * (1 - mask[..., None]) + moved.astype(np.float32) * mask[..., None]
    return out.round().astype(np.uint8)


def _ease(t: float) -> float:
    """Smoothstep: start and stop gently."""
    return t * t * (3 - 2 * t)


def frames() -> list[np.ndarray]:
    """The clip's 120 RGB frames."""
    bg = _background()
    cat = _scaled(data.chelsea(), 280)  # 280 x 421
    cup = _scaled(data.coffee(), 290)  # 290 x 435
    out = []
    for i in range(SEGMENT_FRAMES):  # cat: left to right
        t = _ease(i / (SEGMENT_FRAMES - 1))
        x0, x1 = 12.0, WIDTH - cat.shape[1] - 12.0
        out.append(_place(bg, cat, x0 + (x1 - x0) * t, (HEIGHT - cat.shape[0]) / 2))
    for i in range(SEGMENT_FRAMES):  # coffee: right to left, drifting down
        t = _ease(i / (SEGMENT_FRAMES - 1))
        x0, x1 = WIDTH - cup.shape[1] - 12.0, 12.0
        y0, y1 = 20.0, HEIGHT - cup.shape[0] - 20.0
        out.append(_place(bg, cup, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
    return out


def write(path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.options = {"crf": "20", "preset": "slow", "threads": "1"}
        for i, rgb in enumerate(frames()):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=pathlib.Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    write(args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
