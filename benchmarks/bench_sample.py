"""How well the model does on the bundled samples: box size, confidence, labels.

Runs the real ``camvideo annotate SAMPLE --jsonl`` (default model and settings) on each
sample and reads its per-frame records back:

- box area: the CAM box's area as a share of the frame (``(x1-x0)(y1-y0) / (W H)``),
  median over the frames that have a box, and the share of frames whose box covers
  >= 90 % of the frame (a box around everything says nothing);
- score: the shown class's softmax probability, median over all frames;
- frames drawn as unsure: the score is below ``--min-score`` (default 0.1), so the label is
  grey and no box is drawn (the records still carry the computed box);
- the labels shown and in how many frames.

    python benchmarks/bench_sample.py [--video PATH ...] [-- extra annotate options]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, SAMPLES, machine_facts


def measure(video: Path, extra: list[str], min_score: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out, jsonl = Path(tmp) / "out.mp4", Path(tmp) / "out.jsonl"
        subprocess.run(["camvideo", "annotate", str(video), "-o", str(out), "--jsonl", str(jsonl),
                        "-q", *extra], check=True, cwd=ROOT)  # fmt: skip
        records = [json.loads(line) for line in jsonl.read_text().splitlines()]
        with av.open(str(out)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
    areas = [(r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]) / (width * height) for r in records if r["box"]]
    labels = collections.Counter(r["name"] for r in records)
    return {
        "frames": len(records),
        "size": f"{width}x{height}",
        "median_area": statistics.median(areas) if areas else float("nan"),
        "big_boxes": sum(a >= 0.9 for a in areas) / len(records),
        "unsure": sum(r["score"] < min_score for r in records) / len(records),
        "big_drawn": sum(
            bool(r["box"])
            and r["score"] >= min_score
            and (r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]) >= 0.9 * width * height
            for r in records
        )
        / len(records),  # fmt: skip
        "median_score": statistics.median(r["score"] for r in records),
        "labels": labels.most_common(3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, nargs="+",
                        default=[SAMPLES / "cat_and_coffee_narrated.mp4", SAMPLES / "big_buck_bunny.mp4"])  # fmt: skip
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="options passed to camvideo annotate (after --)")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    from camvideo.options import DEFAULT_MIN_SCORE

    min_score = float(extra[extra.index("--min-score") + 1]) if "--min-score" in extra else DEFAULT_MIN_SCORE
    print("#### The bundled samples: box size, confidence, labels\n")
    print("\n".join(machine_facts()))
    print(f"- `camvideo annotate VIDEO --jsonl` with the defaults{' and ' + ' '.join(extra) if extra else ''}\n")
    print(
        "| video | frames | median box area (of the frame) | boxes >= 90 % of the frame | of them drawn | "
        f"frames drawn unsure (score < {min_score:g}: grey label, no box) | median score | labels shown (frames) |"
    )
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: | :--- |")
    for video in args.video:
        m = measure(video, extra, min_score)
        labels = ", ".join(f"{name} {n}" for name, n in m["labels"])
        print(f"| {video.name} ({m['size']}) | {m['frames']} | {m['median_area']:.0%} | {m['big_boxes']:.0%} | "
              f"{m['big_drawn']:.0%} | {m['unsure']:.0%} | {m['median_score']:.0%} | {labels} |")  # fmt: skip


if __name__ == "__main__":
    main()
