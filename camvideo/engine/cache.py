"""The cache of compiled models (ONNX Runtime, OpenVINO) in the user's cache folder.

The folder, keys and atomic entries live in the torch-free :mod:`camvideo.compiled_cache`
(``camvideo cache`` lists and clears them without loading torch); this module re-exports
them and adds :func:`weights_digest`, the weights' content hash that goes into a key, so a
changed weights file never reuses a model compiled from the old one. Use::

    key = CacheKey(model, weights_digest(net), layer, (height, width), "openvino", ov.__version__)
    compiled = cached_entry(key, build=export_into, load=compile_from)
"""

from __future__ import annotations

import hashlib

import torch

from ..compiled_cache import CacheEntry, CacheKey, cache_dir, cached_entry, clear, list_entries

__all__ = ["CacheEntry", "CacheKey", "cache_dir", "cached_entry", "clear", "list_entries", "weights_digest"]


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 hex over the state dict: each entry's name, dtype, shape and raw bytes, in the
    state dict's (registration) order; deterministic across processes. The bytes are hashed
    through a memoryview of a contiguous CPU copy (no copy for CPU tensors): ~95 ms for
    ResNet-50's 100 MB."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):  # a module's extra state
            digest.update(f"{name}\0extra\0{value!r}\0".encode())
            continue
        tensor = value.detach().to("cpu").contiguous()
        # bytes of any dtype (bfloat16, bool) as uint8: numpy has no bfloat16
        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0{raw.nbytes}\0".encode())
        digest.update(memoryview(raw))
    return digest.hexdigest()
