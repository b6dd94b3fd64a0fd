"""Which x264 preset should annotate use? Encode speed, file size and quality side by side.

The sample's 132 frames (1280x720) are annotated once with the defaults (overlay, box,
label), then encoded by :class:`~camvideo.sinks.Mp4Sink` at crf 23 with each preset, in
interleaved rounds (medians). Quality: PSNR of the decoded file against the frames
given to the encoder (RGB, all frames).

    python benchmarks/bench_x264_preset.py [--presets ultrafast superfast veryfast faster] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import av  # noqa: E402
import numpy as np  # noqa: E402
from _common import SAMPLES, cpu_times, fmt, machine_facts, markdown_table, median, run_in_thread, say, steal_percent  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["ultrafast", "superfast", "veryfast", "faster"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crf", type=int, default=23)
    args = parser.parse_args()

    from camvideo import Explainer
    from camvideo.jobs import FrameAnnotator
    from camvideo.render import Renderer, TemporalSmoother
    from camvideo.sinks import Mp4Sink
    from camvideo.sources import FileSource

    facts = machine_facts()
    video = SAMPLES / "big_buck_bunny.mp4"
    with FileSource(video) as source:
        frames = list(source)
        info = source.info
    ex = Explainer(device="cpu")
    annotator = FrameAnnotator(ex, Renderer(class_names=ex.class_names), TemporalSmoother(0.25))
    images = run_in_thread(lambda: [r.image for i in range(0, len(frames), 2) for r in annotator(frames[i : i + 2])])
    work = Path(tempfile.mkdtemp(prefix="bench_x264_"))
    cpu: dict[str, list[float]] = {p: [] for p in args.presets}
    wall: dict[str, list[float]] = {p: [] for p in args.presets}
    size: dict[str, int] = {}
    steal0 = cpu_times()
    for r in range(args.rounds):
        order = args.presets if r % 2 == 0 else args.presets[::-1]
        for preset in order:
            say(f"round {r + 1}: {preset}")
            path = work / f"{preset}.mp4"

            def encode() -> None:
                with Mp4Sink(path, info, crf=args.crf, preset=preset) as sink:
                    for frame, image in zip(frames, images):
                        sink.encode(image, frame.pts, frame.time)

            w0, c0 = time.perf_counter(), time.process_time()
            run_in_thread(encode)
            wall[preset].append(1000 * (time.perf_counter() - w0) / len(images))
            cpu[preset].append(1000 * (time.process_time() - c0) / len(images))
            size[preset] = path.stat().st_size
    steal = steal_percent(steal0, cpu_times())
    rows = []
    for preset in args.presets:
        with av.open(str(work / f"{preset}.mp4")) as c:
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(decoded, images)])
        psnr = 10 * np.log10(255.0**2 / mse)
        rows.append([preset, fmt(median(cpu[preset])), fmt(median(wall[preset])), fmt(size[preset] / 1e6, 2),
                     fmt(size[preset] * 8 / (len(images) / info.fps) / 1e6, 2), fmt(psnr, 2)])  # fmt: skip
    print(f"### x264 presets: {video.name} annotated (1280x720, {len(images)} frames), crf {args.crf}\n")
    for line in facts:
        print(line)
    print(f"- Mp4Sink.encode in a worker thread, x264 threads auto; {args.rounds} interleaved rounds, medians; "
          f"CPU steal {fmt(steal) if steal is not None else 'n/a'} %\n")  # fmt: skip
    print(
        markdown_table(["preset", "CPU-ms/frame", "wall ms/frame", "file MB", "Mbit/s", "PSNR dB (vs its input)"], rows)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
