"""Localisation vs model input size: which input policy should the default be?

Real photos of objects (scikit-image's cat, coffee cup, rocket, motorcycle and the
astronaut picture's shuttle model, each cut out with a box drawn by hand around the
object) are pasted at seeded random positions and at several scales onto real
backgrounds (frames of the bundled Big Buck Bunny clip, scikit-image's grass, gravel
and brick), in frames of several aspect ratios (16:9 1280x720, 4:3 640x480, 9:16
720x1280, 21:9 1280x544). The pasted crop is the true box.

Each candidate input policy (how a frame becomes the model input) explains every
composite with the default model and method (EfficientNet-Lite0, CAM, top-1 class):

- pointing game: the map's maximum (upsampled bilinearly to the frame, as the overlay
  is) lies inside the true box;
- CorLoc: the box rule of Zhou et al. (pixels above 20 % of the normalised map's
  maximum, largest 8-connected component, its bounding box) has IoU >= 0.5 with the
  true box;
- mean top-1 softmax confidence, and how often top-1 is one of the object's classes;
- speed: CPU-ms per frame of the forward + map (``Explainer.explain`` on the
  preprocessed input, batch 1) for a 1280x720 frame, in interleaved rounds (medians).

The scoring here is written from the definitions with OpenCV and numpy; it does not
use camvideo's renderer, so it checks it rather than repeats it.

    python benchmarks/bench_localisation.py
    python benchmarks/bench_localisation.py --positions 1 --policies short224 budget224
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _common import SAMPLES, cpu_times, fmt, machine_facts, markdown_table, median, run_in_thread, say, steal_percent  # noqa: E402

# (skimage.data name, hand-drawn box x0, y0, x1, y1 around the object, ImageNet classes that name it)
OBJECTS = {
    "cat": ("chelsea", (0, 0, 392, 300), {281, 282, 283, 284, 285, 286, 287}),
    "coffee": ("coffee", (75, 15, 480, 390), {504, 967, 968}),
    "rocket": ("rocket", (298, 122, 348, 410), {657, 744, 812}),
    "motorcycle": ("stereo_motorcycle", (90, 95, 686, 452), {665, 670}),
    "shuttle": ("astronaut", (352, 0, 478, 285), {812, 657, 744}),
}
FRAME_SIZES = {"16:9": (720, 1280), "4:3": (480, 640), "9:16": (1280, 720), "21:9": (544, 1280)}
# the object's box height (or width, for wide crops) as a share of the frame's short side
SCALES = (0.3, 0.5, 0.75)
POLICIES = ("short224", "budget224", "square224", "short192", "budget192", "budget256")


def input_size(policy: str, height: int, width: int) -> tuple[int, int]:
    """(h, w) model input for a frame under a policy name: shortS (short side S, aspect
    kept, as camvideo does today), budgetS (about S*S pixels, aspect kept), squareS (squash)."""
    for prefix in ("short", "budget", "square"):
        if policy.startswith(prefix):
            s = int(policy[len(prefix) :])
            break
    else:
        raise ValueError(f"unknown policy {policy!r}")
    if prefix == "square":
        return s, s
    if prefix == "short":
        short, long = sorted((height, width))
        scaled = round(long * s / short)
        return (s, scaled) if height <= width else (scaled, s)
    ratio = width / height
    return max(1, round(s / math.sqrt(ratio))), max(1, round(s * math.sqrt(ratio)))


@dataclass
class Composite:
    image: np.ndarray  # uint8 RGB (H, W, 3)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    obj: str
    aspect: str
    scale: float
    background: str


def load_backgrounds() -> dict[str, np.ndarray]:
    import skimage.data as data

    backs: dict[str, np.ndarray] = {}
    with av.open(str(SAMPLES / "big_buck_bunny.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in (10, 70, 125):
                backs[f"bunny{i}"] = frame.to_ndarray(format="rgb24")
    for name in ("grass", "gravel", "brick"):
        backs[name] = cv2.cvtColor(getattr(data, name)(), cv2.COLOR_GRAY2RGB)
    return backs


def cover(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to cover (height, width), aspect kept, and crop the centre."""
    h, w = image.shape[:2]
    k = max(height / h, width / w)
    resized = cv2.resize(image, (max(width, round(w * k)), max(height, round(h * k))), interpolation=cv2.INTER_AREA)
    y = (resized.shape[0] - height) // 2
    x = (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[y : y + height, x : x + width])


def make_composites(positions: int, seed: int = 0) -> list[Composite]:
    import skimage.data as data

    rng = np.random.default_rng(seed)
    backs = load_backgrounds()
    back_names = sorted(backs)
    out = []
    k = 0
    for obj, (source, (x0, y0, x1, y1), _) in OBJECTS.items():
        photo = getattr(data, source)()
        photo = photo[0] if isinstance(photo, tuple) else photo  # stereo_motorcycle: (left, right, disparity)
        crop = np.ascontiguousarray(photo[y0:y1, x0:x1])
        ch, cw = crop.shape[:2]
        for aspect, (fh, fw) in FRAME_SIZES.items():
            for scale in SCALES:
                for _ in range(positions):
                    back_name = back_names[k % len(back_names)]
                    k += 1
                    frame = cover(backs[back_name], fh, fw)
                    side = scale * min(fh, fw)
                    f = side / max(ch, cw)
                    f = min(f, 0.9 * fw / cw, 0.9 * fh / ch)
                    oh, ow = max(8, round(ch * f)), max(8, round(cw * f))
                    obj_img = cv2.resize(crop, (ow, oh), interpolation=cv2.INTER_AREA)
                    y = int(rng.integers(0, fh - oh + 1))
                    x = int(rng.integers(0, fw - ow + 1))
                    frame[y : y + oh, x : x + ow] = obj_img
                    out.append(Composite(frame, (x, y, x + ow, y + oh), obj, aspect, scale, back_name))
    return out


def frame_map(raw: np.ndarray, height: int, width: int) -> np.ndarray:
    """Raw map (h', w') -> min-max normalised float32 map at frame size (bilinear, half-pixel centres)."""
    up = cv2.resize(raw.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    low, high = float(up.min()), float(up.max())
    return (up - low) / (high - low) if high > low else np.zeros_like(up)


def box_rule(norm: np.ndarray, threshold: float = 0.2) -> tuple[int, int, int, int] | None:
    mask = (norm > threshold * float(norm.max())).astype(np.uint8)
    if not mask.any():
        return None
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return x, y, x + w, y + h


def iou(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int]) -> float:
    if a is None:
        return 0.0
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


class Preprocessor:
    """The model input for a policy, the way camvideo's ``Explainer.preprocess`` makes it
    (bilinear antialiased resize of the float frame, then (x/255 - mean)/std)."""

    def __init__(self, explainer) -> None:
        import torch

        self.torch = torch
        mean = torch.tensor(explainer.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(explainer.spec.std).view(1, 3, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), mean / std

    def __call__(self, frame: np.ndarray, size: tuple[int, int]):
        torch = self.torch
        x = torch.from_numpy(frame).permute(2, 0, 1).unsqueeze(0).float()
        if tuple(x.shape[-2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return (x * self.scale - self.shift).contiguous(memory_format=torch.channels_last)


def check_policies(policies: list[str]) -> None:
    """Where camvideo has the policy (``Explainer(input_policy=...)``, at the model's 224), its
    input size must be the one benchmarked here."""
    import inspect

    from camvideo import Explainer

    if "input_policy" not in inspect.signature(Explainer).parameters:
        say("this camvideo has no input_policy: the policies are prototyped here only")
        return
    for p in policies:
        name = p.rstrip("0123456789")
        if not p.endswith("224") or name not in ("short", "budget", "square"):
            continue
        ex = Explainer(model="efficientnet_lite0", method="cam", device="cpu", input_policy=name)
        for h, w in FRAME_SIZES.values():
            assert ex.input_size_for(h, w) == input_size(p, h, w), (p, h, w)
        ex.close()


def score(explainer, prep: Preprocessor, composites: list[Composite], policies: list[str]) -> dict[str, dict]:
    import torch

    stats = {p: {"point": [], "corloc": [], "iou": [], "conf": [], "right": [], "aspect": {}} for p in policies}
    for n, c in enumerate(composites):
        h, w = c.image.shape[:2]
        classes = OBJECTS[c.obj][2]
        for p in policies:
            x = prep(c.image, input_size(p, h, w))
            with torch.inference_mode():
                out = explainer.explain(x)
            norm = frame_map(out.maps[0].numpy(), h, w)
            y, xx = np.unravel_index(int(np.argmax(norm)), norm.shape)
            x0, y0, x1, y1 = c.box
            s = stats[p]
            s["point"].append(x0 <= xx < x1 and y0 <= y < y1)
            overlap = iou(box_rule(norm), c.box)
            s["iou"].append(overlap)
            s["corloc"].append(overlap >= 0.5)
            s["conf"].append(float(out.scores[0]))
            s["right"].append(int(out.classes[0]) in classes)
            s["aspect"].setdefault(c.aspect, []).append((s["point"][-1], s["corloc"][-1]))
        if (n + 1) % 20 == 0:
            say(f"  {n + 1}/{len(composites)} composites")
    return stats


def speed(
    explainer, prep: Preprocessor, policies: list[str], rounds: int, calls: int
) -> dict[str, tuple[float, float]]:
    """CPU-ms and wall-ms per frame of explain() on a 1280x720 frame's model input, batch 1."""
    import torch

    frame = cover(load_backgrounds()["bunny70"], 720, 1280)
    inputs = {p: prep(frame, input_size(p, 720, 1280)) for p in policies}
    cpu: dict[str, list[float]] = {p: [] for p in policies}
    wall: dict[str, list[float]] = {p: [] for p in policies}
    with torch.inference_mode():
        for p in policies:  # warm-up: the first call at a size allocates
            explainer.explain(inputs[p])
        for r in range(rounds):
            order = policies if r % 2 == 0 else policies[::-1]
            for p in order:
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    explainer.explain(inputs[p])
                cpu[p].append(1000 * (time.process_time() - c0) / calls)
                wall[p].append(1000 * (time.perf_counter() - w0) / calls)
    return {p: (median(cpu[p]), median(wall[p])) for p in policies}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), help=f"input policies [{' '.join(POLICIES)}]")
    parser.add_argument("--positions", type=int, default=2, help="random positions per object x aspect x scale [2]")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved speed rounds [5]")
    parser.add_argument("--calls", type=int, default=4, help="explain() calls per policy per round [4]")
    parser.add_argument("--torch-threads", type=int, default=2, help="torch intra-op threads [2]")
    parser.add_argument("--norm", choices=("model", "imagenet", "lite"), default="model",
                        help="input normalisation: the model's own [model], ImageNet's mean/std, or "
                             "TensorFlow's Lite (x - 127) / 128")  # fmt: skip
    args = parser.parse_args()
    for p in args.policies:
        input_size(p, 720, 1280)  # a bad name fails before the model loads

    from camvideo import Explainer

    facts = machine_facts()
    steal0 = cpu_times()
    explainer = Explainer(model="efficientnet_lite0", method="cam", device="cpu")
    if args.norm != "model":  # only this benchmark's own preprocessing reads them
        from camvideo.engine.models import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD

        norms = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "lite": (LITE_MEAN, LITE_STD)}
        explainer.spec.mean, explainer.spec.std = norms[args.norm]
    prep = Preprocessor(explainer)
    check_policies(args.policies)
    composites = make_composites(args.positions)
    say(f"{len(composites)} composites, {len(args.policies)} policies")
    stats = run_in_thread(lambda: score(explainer, prep, composites, args.policies), args.torch_threads)
    say("speed ...")
    times = run_in_thread(lambda: speed(explainer, prep, args.policies, args.rounds, args.calls), args.torch_threads)
    steal = steal_percent(steal0, cpu_times())

    print("### Localisation vs model input size (EfficientNet-Lite0, CAM, top-1 class)\n")
    for line in facts:
        print(line)
    print(f"- {len(composites)} composites: {len(OBJECTS)} objects ({', '.join(OBJECTS)}) x {len(FRAME_SIZES)} frame "
          f"shapes ({', '.join(f'{k} {w}x{h}' for k, (h, w) in FRAME_SIZES.items())}) x {len(SCALES)} scales "
          f"({', '.join(f'{s:g}' for s in SCALES)} of the short side) x {args.positions} seeded positions, on "
          f"{len(load_backgrounds())} real backgrounds")  # fmt: skip
    print(f"- input normalisation: mean {fmt(255 * explainer.spec.mean[0], 1)}, std {fmt(255 * explainer.spec.std[0], 1)} "
          f"(red channel, in 0..255 units; --norm {args.norm})")  # fmt: skip
    print(f"- speed: explain() (forward + CAM) on the model input of a 1280x720 frame, batch 1, torch threads "
          f"{args.torch_threads}, {args.rounds} interleaved rounds of {args.calls} calls, medians; CPU steal "
          f"{fmt(steal) if steal is not None else 'n/a'} %\n")  # fmt: skip
    base = args.policies[0]
    rows = []
    for p in args.policies:
        s = stats[p]
        h, w = input_size(p, 720, 1280)
        rows.append([
            f"`{p}`", f"{h}x{w}", fmt(h * w / 1000, 1), fmt(times[p][0], 1), fmt(times[p][0] / times[base][0], 2) + "x",
            fmt(100 * np.mean(s["point"]), 1), fmt(100 * np.mean(s["corloc"]), 1), fmt(np.mean(s["iou"]), 3),
            fmt(np.mean(s["conf"]), 3), fmt(100 * np.mean(s["right"]), 1),
        ])  # fmt: skip
    print(markdown_table(
        ["policy", "720p input", "kpixels", "CPU-ms/frame", f"vs {base}", "pointing %", "CorLoc %", "mean IoU",
         "mean top-1 conf", "top-1 names the object %"], rows))  # fmt: skip
    print("\nBy frame shape (pointing % / CorLoc %):\n")
    aspects = list(FRAME_SIZES)
    rows = []
    for p in args.policies:
        row = [f"`{p}`"]
        for a in aspects:
            pairs = stats[p]["aspect"].get(a, [])
            row.append(
                f"{fmt(100 * np.mean([q[0] for q in pairs]), 0)} / {fmt(100 * np.mean([q[1] for q in pairs]), 0)}"
            )
        rows.append(row)
    print(markdown_table(["policy"] + [f"{a} {FRAME_SIZES[a][1]}x{FRAME_SIZES[a][0]}" for a in aspects], rows))
    n = len(composites)
    print(f"\n{n} composites per policy: one composite moves a percentage by {100 / n:.1f} points.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
