"""Issue 11's levers one by one: the old way against the new, in CPU-ms per 720p frame.

Each pair runs in interleaved rounds in a worker thread (medians), on the sample's frames
and the default model's maps of them:

* preprocess: the float path (720p frame to float, antialiased float resize) vs
  ``Explainer.preprocess`` (antialiased uint8 resize, then float);
* the box: ``cam_box`` on the full 720p colormap index vs ``cam_box_reduced``;
* Lite0's padding: every "same" padding by ``F.pad`` vs folded into the convolution where
  symmetric (the model's forward at 224x398, batch 2);
* start-up: ``import torch`` alone vs with ``torchvision.models`` (fresh processes).

    python benchmarks/bench_levers.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import SAMPLES, cpu_times, fmt, machine_facts, markdown_table, median, run_in_thread, say, steal_percent  # noqa: E402


def cpu_ms(fn, frames: int, calls: int) -> float:
    fn()
    c0 = time.process_time()
    for _ in range(calls):
        fn()
    return 1000 * (time.process_time() - c0) / (calls * frames)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from camvideo import Explainer
    from camvideo.engine.models.lite0 import SameConv2d
    from camvideo.render import Renderer, cam_box, cam_box_reduced
    from camvideo.sources import FileSource

    facts = machine_facts()
    with FileSource(SAMPLES / "big_buck_bunny.mp4") as source:
        frames = [f.image for i, f in enumerate(source) if i % 16 == 0][:8]
    images = torch.from_numpy(np.stack(frames))
    ex = Explainer(device="cpu")
    with torch.inference_mode():
        maps = ex.explain(images).maps
    _, indices = Renderer(backend="opencv").overlay(images, maps)
    scale = 1.0 / (255.0 * torch.tensor(ex.spec.std)).view(1, 3, 1, 1)
    shift = (torch.tensor(ex.spec.mean) / torch.tensor(ex.spec.std)).view(1, 3, 1, 1)
    pair = images[:2]

    def float_preprocess() -> torch.Tensor:
        x = pair.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(224, 398), mode="bilinear", antialias=True, align_corners=False)
        return (x * scale - shift).contiguous(memory_format=torch.channels_last)

    folded = SameConv2d.forward

    def unfolded(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for dim in (-1, -2):
            n, k, s, d = x.shape[dim], self.kernel_size[dim], self.stride[dim], self.dilation[dim]
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        return torch.nn.Conv2d.forward(self, F.pad(x, pads) if any(pads) else x)

    x = ex.preprocess(pair)

    def forward_with(fwd):
        def run() -> None:
            SameConv2d.forward = fwd
            try:
                with torch.inference_mode():
                    ex.model(x)
            finally:
                SameConv2d.forward = folded

        return run

    pairs = {
        "preprocess (2 frames 720p -> 224x398)": (float_preprocess, lambda: ex.preprocess(pair), 2, 8),
        "box rule (720p index)": (
            lambda: [cam_box(ix) for ix in indices],
            lambda: [cam_box_reduced(ix) for ix in indices],
            len(indices),
            4,
        ),  # fmt: skip
        "Lite0 forward, batch 2, 224x398": (forward_with(unfolded), forward_with(folded), 2, 3),
    }
    steal0 = cpu_times()
    results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}

    def measure() -> None:
        for r in range(args.rounds):
            for name, (old, new, n, calls) in pairs.items():
                first, second = (old, new) if r % 2 == 0 else (new, old)
                a = cpu_ms(first, n, calls)
                b = cpu_ms(second, n, calls)
                results[name][0].append(a if r % 2 == 0 else b)
                results[name][1].append(b if r % 2 == 0 else a)
            say(f"round {r + 1}/{args.rounds}")

    run_in_thread(measure, 2)
    starts: dict[str, list[float]] = {"import torch": [], "import torch, torchvision.models": []}
    for _ in range(3):
        for code in starts:
            w0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            starts[code].append(time.perf_counter() - w0)
    steal = steal_percent(steal0, cpu_times())
    rows = []
    for name, (old, new) in results.items():
        rows.append([name, fmt(median(old), 2), fmt(median(new), 2), fmt(median(new) / median(old), 2) + "x"])
    rows.append(["start-up: import torch (+ torchvision.models), wall s", fmt(median(starts["import torch, torchvision.models"]), 2),
                 fmt(median(starts["import torch"]), 2),
                 fmt(median(starts["import torch"]) / median(starts["import torch, torchvision.models"]), 2) + "x"])  # fmt: skip
    print("### Issue 11's levers, old vs new (CPU-ms per frame unless said)\n")
    for line in facts:
        print(line)
    print(f"- {args.rounds} interleaved rounds in a worker thread (torch threads 2), medians; CPU steal "
          f"{fmt(steal) if steal is not None else 'n/a'} %\n")  # fmt: skip
    print(markdown_table(["lever", "old", "new", "new / old"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
