"""The model stage on each inference backend: CPU-ms and wall ms per frame, cam and gradcam.

EfficientNet-Lite0 on 720p frames (the ``short`` input policy: 224x398), batch 1 and 2,
``--threads`` threads (default 2) for torch and for the compiled runtimes. Rows:

* **torch eager, today's path**: the model as loaded, no BatchNorm folding, contiguous
  weights, and gradcam by a backward pass through the network: the 1.00 baseline,
  measured in the same run;
* **torch**: BatchNorm folded, channels-last, gradient methods forward-only (pooled head);
* **openvino**, **onnxruntime**: the compiled runtimes (cached compiled model; the first
  compilation is outside the timing);
* the other gradient methods (hirescam, gradcam++, layercam) on the first compiled
  runtime, as a ratio to its ``cam``.

Each cell times ``--frames`` frames (after a warm-up) on preprocessed batches (the resize
is outside), in a fresh worker thread as the pipeline runs its engine. CPU-ms is the
process's CPU time (``time.process_time``: every thread of the runtime) per frame; wall
ms is elapsed time per frame. The table's last lines give the CPU steal during the run
(``/proc/stat``) and each runtime's CPU time while idle for a second after a run (a
runtime that spins would show hundreds of ms).

    python benchmarks/bench_backends.py [--threads 2] [--frames 40] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import cpu_times, fmt, machine_facts, markdown_table, run_in_thread, say, steal_percent  # noqa: E402

from camvideo import Explainer  # noqa: E402
from camvideo.engine.backends import COMPILED_BACKENDS, installed  # noqa: E402
from camvideo.engine.methods import make_method  # noqa: E402
from camvideo.engine.models import load_model  # noqa: E402


def top1(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=1, keepdim=True)


def time_calls(call, batches: list[torch.Tensor], frames: int, warmup: int) -> tuple[float, float]:
    """(CPU-ms, wall ms) per frame over ``frames`` frames, after ``warmup`` calls."""
    for x in batches[:warmup]:
        call(x)
    done = 0
    c0, w0 = time.process_time(), time.perf_counter()
    while done < frames:
        x = batches[done % len(batches)]
        call(x)
        done += x.shape[0]
    return 1000 * (time.process_time() - c0) / done, 1000 * (time.perf_counter() - w0) / done


def idle_cpu_ms(call, x: torch.Tensor) -> float:
    """Process CPU ms while idle for one second right after a call (spinning threads show here)."""
    call(x)
    c0 = time.process_time()
    time.sleep(1.0)
    return 1000 * (time.process_time() - c0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=40, help="frames timed per cell")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 frames a cell")
    args = parser.parse_args()
    frames = 4 if args.quick else args.frames
    warmup = 1 if args.quick else 3
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 720, 1280, 3), dtype=np.uint8)
    compiled = [b for b in COMPILED_BACKENDS if installed(b)]
    rows: list[list[str]] = []
    idle: list[str] = []

    def bench() -> None:
        baseline: dict[tuple[str, int], float] = {}
        spec = load_model("efficientnet_lite0")
        with Explainer(spec.model, method="cam", device="cpu", backend="torch", class_names=spec.class_names) as ex:
            ex.model.to(memory_format=torch.contiguous_format)  # today's CPU path: contiguous weights
            x = ex.preprocess(images)
            size = tuple(x.shape[-2:])
            say(f"input {size[0]}x{size[1]}")
            for method in ("cam", "gradcam"):
                with make_method(method, ex.model, ex.report, shortcut=False) as m:
                    for n in (1, 2):
                        batches = [x[i : i + n] for i in range(0, 4, n)]
                        cpu, wall = time_calls(lambda b, m=m: m(b, top1), batches, frames, warmup)
                        baseline[(method, n)] = cpu
                        rows.append(["torch eager, today's path", method, n, fmt(cpu), fmt(wall), "1.00"])
                        say(rows[-1])
        for backend in ["torch", *compiled]:
            with Explainer(
                "efficientnet_lite0", method="cam", device="cpu", backend=backend, threads=args.threads
            ) as ex:
                ex.explain(x[:1])  # compile (or load from the cache) outside the timing
                methods = ["cam", "gradcam"]
                if backend == (compiled[0] if compiled else "torch"):
                    methods += ["hirescam", "gradcam++", "layercam"]
                cam_cpu: dict[int, float] = {}
                for method in methods:
                    ex.set_method(method)
                    for n in (1, 2):
                        batches = [x[i : i + n] for i in range(0, 4, n)]
                        cpu, wall = time_calls(ex.explain, batches, frames, warmup)
                        if method == "cam":
                            cam_cpu[n] = cpu
                        speedup = baseline[(method, n)] / cpu if (method, n) in baseline else None
                        ratio = f"{speedup:.2f}" if speedup else f"{cpu / cam_cpu[n]:.2f}x its cam"
                        rows.append(
                            [f"{backend} ({ex.describe().split(': ', 1)[1]})", method, n, fmt(cpu), fmt(wall), ratio]
                        )
                        say(rows[-1])
                ex.set_method("cam")
                idle.append(f"{backend} {fmt(idle_cpu_ms(ex.explain, x[:1]))}")

    before = cpu_times()
    run_in_thread(bench, args.threads)
    steal = steal_percent(before, cpu_times())
    print("\n".join(machine_facts()))
    print(f"- threads: {args.threads} (torch and the compiled runtimes); {frames} frames a cell")
    print()
    header = ["backend (path)", "method", "batch", "CPU-ms/frame", "wall ms/frame", "vs today (CPU)"]
    print(markdown_table(header, rows))
    print()
    print(f"- CPU steal during the run: {fmt(steal) if steal is not None else 'n/a'} %")
    print(f"- process CPU ms while idle for 1 s after a run (spinning would show): {', '.join(idle)}")


if __name__ == "__main__":
    main()
