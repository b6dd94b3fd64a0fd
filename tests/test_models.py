"""The model registry: every named torchvision classifier, local weights, offline errors."""

from __future__ import annotations

import copy
import urllib.error

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from camvideo import Explainer
from camvideo.engine.models import TORCHVISION_MODELS, load_model
from camvideo.errors import ModelError

# The models whose head is GAP -> one Linear: CAM applies. The others must refuse it.
CAM_MODELS = {"resnet18", "resnet50", "inception_v3", "densenet121", "efficientnet_b0", "convnext_tiny"}
EXPECTED_LAYER = {
    "resnet18": "layer4", "resnet50": "layer4", "vgg16": "features", "inception_v3": "Mixed_7c",
    "densenet121": "features", "mobilenet_v3_large": "features", "efficientnet_b0": "features",
    "convnext_tiny": "features",
}  # fmt: skip


# ImageNet's channel mean and std, as published with torchvision's weights (typed here)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def native_frame(height: int, width: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """skimage's chelsea photo at exactly the model input size, so that no resize stands
    between the frame and the reference (the resize is tested in test_engine.py)."""
    from skimage import data

    return cv2.resize(data.chelsea(), (width, height), interpolation=interpolation)


def torchvision_input(name: str, frame: np.ndarray) -> torch.Tensor:
    """The float64 model input by torchvision's own preprocessing for the named model's
    weights: ``(x / 255 - mean) / std`` with the mean/std of ``weights.transforms()``."""
    preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    mean = torch.tensor(preset.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(preset.std, dtype=torch.float64).view(3, 1, 1)
    x = torch.from_numpy(frame).permute(2, 0, 1).double() / 255.0
    return ((x - mean) / std).unsqueeze(0)


def reference_cam(name: str, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (1, C) and every class's CAM (1, C, h, w) of a GAP -> linear torchvision model, in
    float64, from the model's own modules as torchvision builds them (Zhou et al. 2016,
    https://arxiv.org/abs/1512.04150): CAM_c = sum_k w_ck A_k, A the tensor the global pool
    averages. ConvNeXt puts a LayerNorm (gamma, beta) between the pool and the linear layer; on
    the pooled vector p it is affine once mu, sigma of p are known, so CAM_c = sum_k w_ck gamma_k
    (A_k - mu) / sigma (its spatial mean is then the logit minus the constant w_c . beta + b_c).
    """
    model = copy.deepcopy(model).double().eval()
    seen: dict[str, torch.Tensor] = {}
    if name == "densenet121":  # forward(): F.relu(features(x)), then F.adaptive_avg_pool2d
        model.features.register_forward_hook(lambda m, i, o: seen.__setitem__("A", torch.relu(o)))
    else:
        model.avgpool.register_forward_pre_hook(lambda m, i: seen.__setitem__("A", i[0]))
    linear = {"resnet18": "fc", "resnet50": "fc", "inception_v3": "fc", "densenet121": "classifier",
              "efficientnet_b0": "classifier.1", "convnext_tiny": "classifier.2"}[name]  # fmt: skip
    weight = model.get_submodule(linear).weight.detach()
    with torch.no_grad():
        logits = model(x)
    features = seen["A"]
    if name == "convnext_tiny":
        norm = model.classifier[0]
        pooled = features.mean(dim=(2, 3), keepdim=True)
        mu = pooled.mean(dim=1, keepdim=True)
        sigma = torch.sqrt(pooled.var(dim=1, unbiased=False, keepdim=True) + norm.eps)
        features = norm.weight.detach().view(1, -1, 1, 1) * (features - mu) / sigma
    return logits, torch.einsum("ck,nkhw->nchw", weight, features)


def relative_error(a: torch.Tensor, reference: torch.Tensor) -> float:
    return float((a.double() - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_every_named_model_against_torchvision_in_float64(name: str) -> None:
    torch.manual_seed(0)
    spec = load_model(name, pretrained=False)
    assert len(spec.class_names) == 1000 and spec.class_names[0] == "tench"
    assert spec.input_size == (299 if name == "inception_v3" else 224)
    preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    assert (spec.mean, spec.std) == (tuple(preset.mean), tuple(preset.std))
    # GAP networks take any size: half the native one keeps float64 through ConvNeXt within
    # seconds on two busy cores (vgg16 flattens a 7x7 grid: it keeps its 224 x 224)
    short = spec.input_size if name == "vgg16" else spec.input_size // 2
    frame = native_frame(short, short if name == "vgg16" else round(1.5 * short))
    x = torchvision_input(name, frame)
    size = dict(class_names=spec.class_names, input_size=short, mean=spec.mean, std=spec.std, device="cpu")
    with torch.no_grad():
        logits64 = copy.deepcopy(spec.model).double().eval()(x)
    if name not in CAM_MODELS:
        with pytest.raises(ModelError, match="gradcam"):
            Explainer(spec.model, method="cam", **size)
        ex = Explainer(spec.model, method="gradcam", **size)
        assert ex.target_layer == EXPECTED_LAYER[name]
        out = ex.explain(frame[None])
        assert relative_error(out.logits, logits64) < 1e-4
        assert out.maps.shape[0] == 1 and torch.isfinite(out.maps).all()
        # vgg16 flattens a 7x7 grid into its classifier: it needs its fixed size
        assert ex.fixed_size == (name == "vgg16")
        return
    logits64, cams64 = reference_cam(name, spec.model, x)
    with Explainer(spec.model, method="cam", **size) as ex:
        assert ex.target_layer == EXPECTED_LAYER[name] and not ex.fixed_size
        assert tuple(ex.preprocess(frame[None]).shape[-2:]) == frame.shape[:2]  # no resize at the native size
        out = ex.explain(frame[None], target="top3")
    assert relative_error(out.logits, logits64) < 1e-4
    top3 = logits64[0].topk(3).indices
    assert out.classes[0].tolist() == top3.tolist()
    want = cams64[0, top3]
    assert out.maps.shape == (1, 3, *want.shape[-2:])
    # float32 against float64 through a deep network: a relative 1e-4 of the map's range
    assert relative_error(out.maps[0], want) < 1e-4, relative_error(out.maps[0], want)


def test_default_model_says_egyptian_cat_on_chelsea() -> None:
    """EfficientNet-Lite0 with its ImageNet weights, through the Explainer as the CLI builds it,
    on skimage's chelsea at 224 x 224: ImageNet class 285, "Egyptian cat", p = 0.771 (the
    reference implementation's figure recorded in test_lite0.py)."""
    frame = native_frame(224, 224, cv2.INTER_LINEAR)
    with Explainer(device="cpu") as ex:
        out = ex.explain(frame[None], target="top1")
        model = ex.model
    assert int(out.classes[0]) == 285 and ex.class_names[285] == "Egyptian cat"
    assert float(out.scores[0]) == pytest.approx(0.771, abs=0.002)
    # and the engine's numbers are the model's: float64 logits, input (x/255 - mean) / std
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(3, 1, 1)
    x = ((torch.from_numpy(frame).permute(2, 0, 1).double() / 255.0 - mean) / std).unsqueeze(0)
    with torch.no_grad():
        logits64 = copy.deepcopy(model).double().eval()(x)
    assert relative_error(out.logits, logits64) < 1e-4
    assert float(torch.softmax(logits64, 1)[0, 285]) == pytest.approx(0.771, abs=0.002)


def test_local_weights_load_into_named_model(tmp_path) -> None:
    torch.manual_seed(1)
    reference = load_model("resnet18", pretrained=False).model.eval()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": reference.state_dict()}, path)  # wrapped, as training scripts save
    torch.manual_seed(2)  # a fresh resnet18 would now start from other random weights
    frame = native_frame(224, 336)
    with Explainer("resnet18", weights=path, device="cpu") as ex:
        loaded = ex.model.state_dict()
        assert set(loaded) == set(reference.state_dict())
        assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())  # bit for bit
        out = ex.explain(frame[None])
    with torch.no_grad():
        direct = reference(torchvision_input("resnet18", frame).float())  # the saved model itself
    assert relative_error(out.logits, direct.double()) < 1e-5


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
