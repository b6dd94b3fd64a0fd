"""The model registry: every named torchvision classifier, local weights, offline errors."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from camvideo import Explainer
from camvideo.errors import ModelError
from camvideo.engine.models import TORCHVISION_MODELS, load_model

# The models whose head is GAP -> one Linear: CAM applies. The others must refuse it.
CAM_MODELS = {"resnet18", "resnet50", "inception_v3", "densenet121", "efficientnet_b0", "convnext_tiny"}
EXPECTED_LAYER = {
    "resnet18": "layer4", "resnet50": "layer4", "vgg16": "features", "inception_v3": "Mixed_7c",
    "densenet121": "features", "mobilenet_v3_large": "features", "efficientnet_b0": "features",
    "convnext_tiny": "features",
}  # fmt: skip


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_every_named_model_cam_identity_or_refusal(name: str) -> None:
    torch.manual_seed(0)
    spec = load_model(name, pretrained=False)
    assert len(spec.class_names) == 1000 and spec.class_names[0] == "tench"
    assert spec.input_size == (299 if name == "inception_v3" else 224)
    frames = np.random.default_rng(0).integers(0, 256, (1, 150, 200, 3), dtype=np.uint8)
    size = dict(class_names=spec.class_names, input_size=spec.input_size, mean=spec.mean, std=spec.std, device="cpu")
    if name not in CAM_MODELS:
        with pytest.raises(ModelError, match="gradcam"):
            Explainer(spec.model, method="cam", **size)
        ex = Explainer(spec.model, method="gradcam", **size)
        assert ex.target_layer == EXPECTED_LAYER[name]
        out = ex.explain(frames)
        assert out.maps.shape[0] == 1 and torch.isfinite(out.maps).all()
        # vgg16 flattens a 7x7 grid into its classifier: it needs its fixed size
        assert ex.fixed_size == (name == "vgg16")
        return
    with Explainer(spec.model, method="cam", **size) as ex:
        assert ex.target_layer == EXPECTED_LAYER[name] and not ex.fixed_size
        assert ex.preprocess(frames).shape[-2:] == (spec.input_size, round(200 * spec.input_size / 150))
        out = ex.explain(frames, target="top3")
        modules = dict(ex.model.named_modules())
        linear = modules[ex.report.cam_linear]
        bias = linear.bias.detach()
        if ex.report.cam_norm is not None:  # ConvNeXt: pool -> LayerNorm(γ, β) -> linear; CAM folds it in
            assert name == "convnext_tiny"
            bias = bias + linear.weight.detach() @ modules[ex.report.cam_norm].bias.detach()
        expected = out.logits.gather(1, out.classes) - bias[out.classes]
        # the spatial mean of a raw CAM is the class logit minus the bias: the hooked tensor
        # is exactly the one the pooling averages (DenseNet's functional ReLU included)
        torch.testing.assert_close(out.maps.mean(dim=(2, 3)), expected, rtol=1e-4, atol=1e-4)


def test_local_weights_load_into_named_model(tmp_path) -> None:
    torch.manual_seed(1)
    reference = load_model("resnet18", pretrained=False).model.eval()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": reference.state_dict()}, path)  # wrapped, as training scripts save
    with Explainer("resnet18", weights=path, device="cpu") as ex:
        x = torch.randn(2, 3, 224, 224)
        with torch.inference_mode():
            torch.testing.assert_close(ex.model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_offline_without_weights_names_the_way_out(monkeypatch) -> None:
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match=r"--weights PATH.*efficientnet_lite0"):
        load_model("resnet50")


def test_weights_mismatch_and_pickled_code_are_refused(tmp_path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ModelError, match="does not match"):
        load_model("resnet18", weights=wrong)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(ModelError, match="weights_only"):
        load_model("resnet18", weights=evil)
    with pytest.raises(ModelError, match="unknown model"):
        load_model("resnet9000")


def test_imagenet_class_names_are_torchvisions() -> None:
    """Issue 11: the bundled names (no torchvision import at start-up) are torchvision's list."""
    from torchvision.models import ResNet18_Weights

    from camvideo.engine.models import imagenet_class_names

    assert imagenet_class_names() == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
