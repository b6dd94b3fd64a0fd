"""timm models by name: ``timm:NAME`` (``pip install timm``).

``timm.create_model(NAME)`` builds the model; its weights come from timm's pretrained
tag when online (or already in the Hugging Face cache), or from ``--weights PATH`` (a
local state dict, loaded strictly and safely) offline. What the engine needs besides the
weights comes from the model's own ``pretrained_cfg``: input size, mean, std,
interpolation, and the class names of its label set (``timm.data.infer_imagenet_subset``
and ``ImageNetInfo``: ImageNet-1k, 12k, 21k). The crop is not applied: camvideo always
shows the whole frame.

ViTs are built with ``dynamic_img_size=True`` (and ``dynamic_img_pad=True``) where the
model takes it: they then interpolate their position embeddings, so frames keep their
aspect ratio (the engine's 16:9 probe confirms it); other models with
``fixed_input_size`` get squashed frames. Feature backbones (``num_classes == 0`` or an
``nn.Identity`` classifier, e.g. ``vit_small_patch16_224.dino``) are refused: camvideo
explains classifiers.
"""

from __future__ import annotations

import difflib
import os

from torch import nn

from ...errors import ModelError

PREFIX = "timm:"


def _timm():
    try:
        import timm
    except ImportError:
        raise ModelError("timm models need timm: pip install timm (or '.[timm]' in camvideo's clone)") from None
    return timm


def class_names_of(model: nn.Module) -> list[str]:
    """Short class names (``"tench"``) from the label set named by the model's pretrained config."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    classes = getattr(model, "num_classes", 0)
    if not subset:
        return [f"class {i}" for i in range(classes)]
    info = ImageNetInfo(subset)
    if info.num_classes() != classes:
        return [f"class {i}" for i in range(classes)]
    return [info.index_to_description(i).split(",")[0].strip() for i in range(classes)]


def create(name: str, pretrained: bool) -> nn.Module:
    """``timm.create_model(name)``, with dynamic position embeddings where the model has them."""
    timm = _timm()
    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean: {', '.join(close)}" if close else "; `timm.list_models()` lists them"
        raise ModelError(f"unknown timm model {name!r}{hint}")
    try:
        # dynamic_img_pad: an input side that is not a multiple of the patch size is padded
        # (the last row/column of patches is partly padding) instead of refused
        return timm.create_model(name, pretrained=pretrained, dynamic_img_size=True, dynamic_img_pad=True)
    except TypeError:  # the model has no dynamic_img_size argument
        return timm.create_model(name, pretrained=pretrained)


def timm_parts(name: str, weights: str | os.PathLike | None, pretrained: bool) -> dict:
    """The model and its preprocessing, as keyword arguments for ``ModelSpec``."""
    from .state_dict import load_state_dict

    download = pretrained and weights is None
    try:
        model = create(name, download)
    except ModelError:
        raise
    except Exception as err:  # no network, no cached file, a gated repository ...
        if not download:
            raise ModelError(f"cannot build timm model {name!r}: {str(err).splitlines()[0][:160]}") from None
        raise ModelError(
            f"cannot download timm's weights for {name} ({type(err).__name__}); offline, pass --weights PATH "
            "(a local state dict of this model)"
        ) from None
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if getattr(model, "num_classes", None) == 0 or isinstance(head, nn.Identity):
        # its outputs are features, not class scores: a map "for class 17" would mean nothing
        raise ModelError(f"{PREFIX}{name} has no classifier head (a feature backbone); camvideo explains classifiers")
    if weights is not None:
        load_state_dict(model, weights)
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return dict(
        model=model,
        name=PREFIX + name,
        input_size=int(config["input_size"][-1]),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        class_names=class_names_of(model),
        fixed_size=bool(cfg.get("fixed_input_size")) and not getattr(model, "dynamic_img_size", False),
        interpolation=str(config.get("interpolation") or "bilinear"),
    )
