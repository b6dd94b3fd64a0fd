"""The one thing a backend does: ``run(x) -> (the target layer's output, logits)``.

``x`` is the preprocessed batch (N, 3, h, w); the first output is the target layer's
output as the network produced it (a CNN's (N, K, h', w') map, a Swin's channels-last map
or a ViT's tokens: the method lays it on the grid), the second the (N, classes) logits.
Both come back as CPU or device torch tensors that the caller may keep.

The torch path is the methods' own hooked forward (:class:`camvideo.engine.methods.CAMMethod`,
on the model :func:`~camvideo.engine.backends.torch_backend.inference_model` prepares); the
compiled runtimes (:mod:`.compiled`) export the network with that output as a second
output. When one cannot be had (the runtime is missing, the export or compilation fails),
:class:`BackendUnavailable` says why in one line and the caller goes on with torch.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Protocol

import torch

#: The compiled runtimes, fastest first on the CPUs measured (benchmarks/bench_backends.py):
#: ``auto`` takes the first one installed.
COMPILED_BACKENDS: tuple[str, ...] = ("openvino", "onnxruntime")
#: The pip command that installs each runtime.
INSTALL_HINTS = {"openvino": "pip install openvino", "onnxruntime": 'pip install ".[onnxruntime]"'}


class Backend(Protocol):
    """A network run for one target layer."""

    name: str

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the target layer's output, logits) for the preprocessed batch ``x``."""
        ...

    def close(self) -> None: ...


class BackendUnavailable(RuntimeError):
    """This backend cannot run here; the message is the one line users see."""


def installed(name: str) -> bool:
    """Is the runtime ``name`` importable (without importing it)?"""
    module = {"openvino": "openvino", "onnxruntime": "onnxruntime"}.get(name)
    return module is not None and importlib.util.find_spec(module) is not None


def note(message: str) -> None:
    """One line on stderr, as camvideo's other notes."""
    print(f"camvideo: {message.removeprefix('camvideo: ')}", file=sys.stderr, flush=True)
