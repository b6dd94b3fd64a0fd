"""Models by name beyond the CNNs: the offline EfficientNet-Lite family, torchvision's
transformer and modern families, ``timm:NAME``, and ``camvideo annotate`` end to end on a ViT.

References are independent of the engine: the weight files' own tensor shapes, float64
copies of the models for logits and the CAM identity, the decoded output file.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

from camvideo import Explainer
from camvideo.engine.models import load_model
from camvideo.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
CAT_CLIP = ROOT / "sample_videos" / "cat_and_coffee.mp4"


def float64_copy(net: nn.Module) -> nn.Module:
    ref = copy.deepcopy(net).double().eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def clip_frames(path: Path, picks: list[int]) -> np.ndarray:
    with av.open(str(path)) as c:
        images = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return np.stack([images[i] for i in picks])


def write_clip(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# -- the offline EfficientNet-Lite family ----------------------------------------------------------
@pytest.mark.parametrize("variant,size,head_in,blocks", [(1, 240, 320, 21), (2, 260, 352, 21)])
def test_lite_family_loads_offline_at_native_size_and_cam_is_exact(variant, size, head_in, blocks) -> None:
    from camvideo.engine.models.lite import lite_weights_path

    try:
        path = lite_weights_path(variant)
    except ModelError as err:
        pytest.skip(str(err))
    state = torch.load(path, map_location="cpu", weights_only=True)  # the file's own shapes
    assert tuple(state["_conv_head.weight"].shape) == (1280, head_in, 1, 1)
    assert len({k.split(".")[1] for k in state if k.startswith("_blocks.")}) == blocks
    ex = Explainer(f"efficientnet_lite{variant}", method="cam", device="cpu")
    assert ex.spec.input_size == size and (ex.target_layer, ex.report.cam_linear) == ("head", "classifier")
    assert len(ex.class_names) == 1000 and ex.class_names[285] == "Egyptian cat"
    frames = clip_frames(CAT_CLIP, [20, 100])  # the cat, then the cup
    x = ex.preprocess(frames)
    assert x.shape[-2:] == (size, round(640 * size / 360))  # aspect kept
    out = ex.explain(x, target="top3")
    ref = float64_copy(ex.model)
    with torch.no_grad():
        logits64 = ref(x.double())
    # the trained weights and preprocessing are right: the cat frame is a cat, the cup a cup
    assert ex.class_names[int(logits64[0].argmax())] in ("Egyptian cat", "tabby", "tiger cat")
    assert ex.class_names[int(logits64[1].argmax())] in ("espresso", "cup", "coffee mug")
    bias = ref.classifier.bias
    want = logits64.gather(1, out.classes) - bias[out.classes]
    np.testing.assert_allclose(
        out.maps.double().mean(dim=(2, 3)).numpy(), want.numpy(), atol=2e-4 * float(logits64.abs().max())
    )


def test_lite_weights_of_another_variant_are_refused(tmp_path) -> None:
    from camvideo.engine.models.lite import lite_weights_path

    try:
        path = lite_weights_path(2)
    except ModelError as err:
        pytest.skip(str(err))
    with pytest.raises(ModelError, match="not an EfficientNet-Lite1 state dict"):
        load_model("efficientnet_lite1", weights=path)


# -- torchvision families by name ------------------------------------------------------------------
FAMILIES = {  # name: (target layer, layout, cam exact)
    "vit_b_32": ("encoder.layers.encoder_layer_11.ln_1", "tokens", False),
    "swin_t": ("norm", "channels_last", True),
    "swin_v2_t": ("norm", "channels_last", True),
    "maxvit_t": ("blocks.3", "map", False),
    "convnext_tiny": ("features", "map", True),
    "regnet_y_400mf": ("trunk_output", "map", True),
    "efficientnet_v2_s": ("features", "map", True),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_torchvision_family_by_name_layer_rule_and_cam(name: str) -> None:
    torch.manual_seed(0)
    spec = load_model(name, pretrained=False)
    assert len(spec.class_names) == 1000 and spec.class_names[0] == "tench"
    layer, layout, exact = FAMILIES[name]
    kw = dict(class_names=spec.class_names, input_size=spec.input_size, mean=spec.mean, std=spec.std, device="cpu")
    if not exact:
        with pytest.raises(ModelError, match="gradcam"):
            Explainer(spec.model, method="cam", **kw)
    ex = Explainer(spec.model, method="cam" if exact else "gradcam", **kw)
    assert (ex.target_layer, ex.report.layout.kind) == (layer, layout)
    # torchvision's ViT and MaxViT need their trained size; the pooled families keep the aspect
    assert ex.fixed_size == (name in ("vit_b_32", "maxvit_t"))
    frame = np.random.default_rng(0).integers(0, 256, (1, 180, 320, 3), dtype=np.uint8)
    out = ex.explain(frame)
    assert out.maps.shape[0] == 1 and torch.isfinite(out.maps).all()
    if name == "vit_b_32":
        assert out.maps.shape[-2:] == (7, 7)


# -- timm models by name ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,layer", [("test_vit", "blocks.5.norm1"), ("test_efficientnet", "bn2")])
def test_timm_model_by_name_with_local_weights(tmp_path, name: str, layer: str) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(3)
    trained = timm.create_model(name, pretrained=False).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(trained.state_dict(), path)
    ex = Explainer(f"timm:{name}", weights=path, method="gradcam", device="cpu")
    cfg = trained.pretrained_cfg  # the model's own preprocessing
    assert (ex.spec.input_size, ex.spec.mean, ex.spec.std) == (cfg["input_size"][-1], cfg["mean"], cfg["std"])
    assert ex.spec.interpolation == cfg["interpolation"] == "bicubic"
    assert ex.class_names[0] == "tench" and len(ex.class_names) == 1000
    assert ex.target_layer == layer
    x = ex.preprocess(np.random.default_rng(1).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8))
    out = ex.explain(x)
    with torch.no_grad():  # the local weights are the ones in use
        want = float64_copy(trained)(x.double())
    np.testing.assert_allclose(out.logits.double().numpy(), want.numpy(), atol=1e-4 * float(want.abs().max()))


def test_unknown_timm_name_says_so() -> None:
    pytest.importorskip("timm")
    with pytest.raises(ModelError, match="unknown timm model 'vit_tiny_patch16_2244'.*vit_tiny_patch16_224"):
        load_model("timm:vit_tiny_patch16_2244")


def test_timm_backbone_without_classifier_head_is_refused() -> None:
    # DINO's ViT-S is a feature backbone (num_classes 0, an Identity head): explaining its
    # features as classes would draw maps of "class 17" that mean nothing
    pytest.importorskip("timm")
    with pytest.raises(ModelError) as err:
        load_model("timm:vit_small_patch16_224.dino", pretrained=False)
    want = "timm:vit_small_patch16_224.dino has no classifier head (a feature backbone); camvideo explains classifiers"
    assert str(err.value) == want


def test_timm_vit_keeps_the_aspect_by_interpolating_position_embeddings() -> None:
    pytest.importorskip("timm")
    spec = load_model("timm:test_vit", pretrained=False)
    ex = Explainer(spec.model, method="gradcam", device="cpu", class_names=spec.class_names, input_size=160)
    assert not ex.fixed_size and ex.report.layout.stride == 16
    out = ex.explain(np.zeros((1, 180, 320, 3), np.uint8))
    assert out.input_size == (160, 284) and out.maps.shape[-2:] == (10, 18)  # 160/16 x ceil(284/16): padded


# -- end to end ------------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "camvideo", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


@pytest.mark.timeout(900)
def test_annotate_vit_b_16_gradcam_with_local_weights_end_to_end(tmp_path) -> None:
    import torchvision.models as tvm

    torch.manual_seed(0)
    net = tvm.vit_b_16()
    nn.init.normal_(net.heads.head.weight, std=0.02)  # torchvision starts it at zero
    weights = tmp_path / "vit_b_16.pth"
    torch.save(net.state_dict(), weights)
    del net
    frames = clip_frames(CAT_CLIP, [0, 40, 80])[:, ::2, ::2].copy()  # 320x180, 3 frames: a short sample
    clip = tmp_path / "sample.mp4"
    write_clip(clip, frames)
    out, maps = tmp_path / "out.mp4", tmp_path / "maps.npz"
    proc = run_cli("annotate", str(clip), "--model", "vit_b_16", "--weights", str(weights), "--method", "gradcam",
                   "-o", str(out), "--maps", str(maps), "--batch-size", "3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "encoder.layers.encoder_layer_11.ln_1" in proc.stdout  # the chosen layer is printed
    decoded = decoded_frames(out)
    assert len(decoded) == 3 and decoded[0].shape == (180, 320, 3)
    with np.load(maps) as data:
        assert data["maps"].shape == (3, 14, 14)
        assert np.isfinite(data["maps"].astype(np.float32)).all() and data["maps"].astype(np.float32).max() > 0


def test_annotate_timm_vit_by_name_with_local_weights(tmp_path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    weights = tmp_path / "test_vit.pth"
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), weights)
    clip = tmp_path / "sample.mp4"
    write_clip(clip, clip_frames(CAT_CLIP, [10, 90])[:, ::2, ::2].copy())
    out, maps = tmp_path / "out.mp4", tmp_path / "maps.npz"
    proc = run_cli("annotate", str(clip), "--model", "timm:test_vit", "--weights", str(weights), "--method", "rollout",
                   "-o", str(out), "--maps", str(maps))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "timm:test_vit: rollout on layer blocks.5.norm1" in proc.stdout
    assert len(decoded_frames(out)) == 2
    with np.load(maps) as data:  # 180x320 -> 160x284 (aspect kept), 16-pixel patches, the last column padded
        assert data["maps"].shape == (2, 10, 18)


def test_lite_generalisation_at_width_and_depth_one_is_lite0() -> None:
    # the Lite family is Lite0's architecture scaled: at coefficients 1.0 it is Lite0 itself
    from camvideo.engine.models.lite import EfficientNetLite
    from camvideo.engine.models.lite0 import EfficientNetLite0

    torch.manual_seed(5)
    lite0 = EfficientNetLite0().eval()
    general = EfficientNetLite(1.0, 1.0).eval()
    shapes = {k: tuple(v.shape) for k, v in lite0.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in general.state_dict().items()} == shapes
    general.load_state_dict(lite0.state_dict())
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(general(x), lite0(x), rtol=0, atol=0)
