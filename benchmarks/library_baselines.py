"""The CAM libraries as their READMEs use them, over a video: baselines of bench_speed.py.

* ``gradcam``: pytorch-grad-cam (``pip install grad-cam``), ``GradCAM(model,
  target_layers)`` with its default top-1 targets, ``--batch`` frames per call, each map
  shown with its ``show_cam_on_image``;
* ``torchcam``: torchcam's ``CAM(model, target_layer, fc_layer)`` and its
  ``overlay_mask`` (PIL), one frame per call.

Both read with cv2.VideoCapture, feed the same EfficientNet-Lite0 a 224x224 resize
normalised with ImageNet's mean/std, and write cv2.VideoWriter mp4v.

    python benchmarks/library_baselines.py gradcam IN.mp4 OUT.mp4 --batch 8
    python benchmarks/library_baselines.py torchcam IN.mp4 OUT.mp4
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
import torch

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def model_input(rgb: np.ndarray) -> torch.Tensor:
    small = cv2.resize(rgb, (224, 224)) / np.float32(255)
    return torch.from_numpy(((small - MEAN) / STD).transpose(2, 0, 1).copy())


def frames_in_batches(cap: cv2.VideoCapture, batch: int):
    while True:
        chunk = []
        while len(chunk) < batch:
            ok, bgr = cap.read()
            if not ok:
                break
            chunk.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not chunk:
            return
        yield chunk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("library", choices=("gradcam", "torchcam"))
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()

    from camvideo import Explainer

    ex = Explainer(model="efficientnet_lite0", method="cam", device="cpu")
    model = ex.model.eval()
    layers = dict(model.named_modules())
    cap = cv2.VideoCapture(args.src)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(args.dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    frames = 0
    if args.library == "gradcam":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image

        with GradCAM(model=model, target_layers=[layers[ex.target_layer]]) as cam:
            for chunk in frames_in_batches(cap, args.batch):
                grey = cam(input_tensor=torch.stack([model_input(rgb) for rgb in chunk]), targets=None)
                for rgb, g in zip(chunk, grey):
                    vis = show_cam_on_image(np.float32(rgb) / 255, cv2.resize(g, (width, height)), use_rgb=True)
                    writer.write(cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
                    frames += 1
    else:
        from PIL import Image
        from torchcam.methods import CAM
        from torchcam.utils import overlay_mask

        with CAM(model, target_layer=ex.target_layer, fc_layer=ex.report.cam_linear) as extractor:
            for chunk in frames_in_batches(cap, 1):
                rgb = chunk[0]
                with torch.no_grad():
                    scores = model(model_input(rgb)[None])
                maps = extractor(int(scores[0].argmax()), scores)
                mask = Image.fromarray(maps[0][0].numpy().astype(np.float32), mode="F")
                shown = overlay_mask(Image.fromarray(rgb), mask, alpha=0.5)
                writer.write(cv2.cvtColor(np.asarray(shown), cv2.COLOR_RGB2BGR))
                frames += 1
    cap.release()
    writer.release()
    print(frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
