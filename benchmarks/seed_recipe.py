"""The seeds' sequential recipe, as a user would write it: the baseline of bench_speed.py.

cv2.VideoCapture, a 224x224 resize, EfficientNet-Lite0, CAM from the classifier's
weights over the last feature map (Zhou et al. 2016, https://arxiv.org/abs/1512.04150:
M_c = sum_k w_c,k A_k), cv2.resize / applyColorMap / addWeighted, cv2.VideoWriter mp4v.
The network comes from camvideo only because that is where EfficientNet-Lite0 with
offline ImageNet weights is; everything else is torch, numpy and OpenCV.

    python benchmarks/seed_recipe.py IN.mp4 OUT.mp4
"""

import sys

import cv2
import numpy as np
import torch

from camvideo import Explainer

src, dst = sys.argv[1], sys.argv[2]
ex = Explainer(model="efficientnet_lite0", method="cam", device="cpu")
model = ex.model.eval()
layers = dict(model.named_modules())
fc = layers[ex.report.cam_linear].weight.detach().numpy()  # (classes, K)
features = {}
layers[ex.target_layer].register_forward_hook(lambda m, i, o: features.update(a=o.detach().numpy()))
mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)

cap = cv2.VideoCapture(src)
fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
frames = 0
while True:
    ok, bgr = cap.read()
    if not ok:
        break
    rgb = cv2.cvtColor(cv2.resize(bgr, (224, 224)), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(((rgb / np.float32(255) - mean) / std).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        top = int(model(x)[0].argmax())
    a = features["a"][0]  # (K, h, w)
    cam = (fc[top] @ a.reshape(a.shape[0], -1)).reshape(a.shape[1:])
    cam = cv2.resize(cam, (width, height))
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-8)
    heat = cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET)
    writer.write(cv2.addWeighted(bgr, 0.5, heat, 0.5, 0))
    frames += 1
cap.release()
writer.release()
print(frames)
