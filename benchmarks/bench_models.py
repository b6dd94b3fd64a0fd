"""What each offline EfficientNet-Lite costs on this CPU: forward and forward + CAM per frame.

For Lite0 (the default), Lite1 (240) and Lite2 (260), each at its native resolution: the
square input and the aspect-kept input of a 16:9 frame (short side native), batch 1 and
batch 2 (the CPU pipeline's default). Per row: wall ms per frame (median of interleaved
repetitions: the models take turns within each repetition, so the load of other users hits
all of them), process CPU ms per frame (2 cores can share one budget; on a machine loaded by
others this is the steadier figure), and the ratios to Lite0 in the same repetition. ImageNet top-1 is the figure TensorFlow's EfficientNet-Lite
README publishes for the same checkpoints (no ImageNet here to measure it); the README's
re-evaluation of those checkpoints reports 74.9 / 76.7 / 77.4 %.

    python benchmarks/bench_models.py [--repeat N] [--threads T]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    SAMPLES,
    cpu_times,
    fmt,
    machine_facts,
    markdown_table,
    median,
    run_in_thread,
    say,
    steal_percent,
)  # fmt: skip

MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
FRAMES = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="interleaved repetitions [%(default)s]")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads [%(default)s]")
    parser.add_argument("--video", type=Path, default=SAMPLES / "big_buck_bunny.mp4")
    args = parser.parse_args()

    from bench_engine import load_frames

    from camvideo import Explainer
    from camvideo.engine.models import LITE_MODELS

    images = load_frames(args.video, FRAMES)
    say("loading the models ...")
    explainers = {name: Explainer(name, method="cam", device="cpu") for name in MODELS}
    cases = []  # (model, shape label, batch, [batches of x])
    for name, ex in explainers.items():
        size = ex.spec.input_size
        square = torch.nn.functional.interpolate(
            torch.from_numpy(images).permute(0, 3, 1, 2).float(), size=(size, size)
        )
        square = (square / 255 - torch.tensor(ex.spec.mean).view(1, 3, 1, 1)) / torch.tensor(ex.spec.std).view(
            1, 3, 1, 1
        )
        kept = ex.preprocess(images)
        for label, x in ((f"{size}x{size}", square), (f"{kept.shape[2]}x{kept.shape[3]}", kept)):
            x = x.contiguous(memory_format=torch.channels_last)
            for bs in (1, 2):
                cases.append((name, label, bs, [x[i : i + bs] for i in range(0, FRAMES, bs)]))

    def one(name: str, batches: list[torch.Tensor], explain: bool) -> tuple[float, float]:
        ex = explainers[name]
        w0, c0 = time.perf_counter(), time.process_time()
        for x in batches:
            if explain:
                ex.explain(x)
            else:
                with torch.inference_mode():
                    ex.model(x)
        return (time.perf_counter() - w0) / FRAMES, (time.process_time() - c0) / FRAMES

    def measure() -> dict:
        results: dict = {}
        for case in cases:  # warm-up
            one(case[0], case[3], False)
            one(case[0], case[3], True)
        for rep in range(args.repeat):
            for i, (name, label, bs, batches) in enumerate(cases if rep % 2 == 0 else cases[::-1]):
                for explain in (False, True):
                    results.setdefault((name, label, bs, explain), []).append(one(name, batches, explain))
        return results

    before = cpu_times()
    results = run_in_thread(measure, args.threads)
    steal = steal_percent(before, cpu_times())
    rows = []
    for name, label, bs, _ in cases:
        fwd = results[(name, label, bs, False)]
        cam = results[(name, label, bs, True)]
        base = results[(MODELS[0], label if name == MODELS[0] else _same_kind(label, cases), bs, False)]
        wall = median([w for w, _ in fwd])
        ratio = median([w / b for (w, _), (b, _) in zip(fwd, base)])
        cpu_ratio = median([c / b for (_, c), (_, b) in zip(fwd, base)])
        rows.append([name, label, bs, fmt(1000 * wall), fmt(1000 * median([c for _, c in fwd])),
                     fmt(1000 * median([w for w, _ in cam])), f"{ratio:.2f}x", f"{cpu_ratio:.2f}x",
                     f"{LITE_MODELS[name][2]} %"])  # fmt: skip
    print("### EfficientNet-Lite family: cost per frame on this CPU")
    print()
    for line in machine_facts():
        print(line)
    print(f"- torch threads {args.threads} in a worker thread; {args.repeat} interleaved repetitions of {FRAMES} frames "
          f"of {args.video.name}; CPU steal during the run: {fmt(steal) if steal is not None else 'n/a'} %")  # fmt: skip
    print()
    print(markdown_table(
        ["model", "input", "batch", "forward ms/frame", "forward CPU ms/frame", "forward + cam ms/frame",
         "wall vs Lite0 (same input kind)", "CPU vs Lite0", "ImageNet top-1 (published)"],
        rows,
    ))  # fmt: skip
    return 0


def _same_kind(label: str, cases: list) -> str:
    """Lite0's input label of the same kind (square or aspect kept) as ``label``."""
    h, w = (int(v) for v in label.split("x"))
    lite0 = sorted({c[1] for c in cases if c[0] == MODELS[0]})
    return next(lab for lab in lite0 if (lab.split("x")[0] == lab.split("x")[1]) == (h == w))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
