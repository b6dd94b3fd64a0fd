"""What the compiled runtimes share: one export per input size, through the cache.

A video's frames all have one size, so a runtime compiles the network once for it (a new
size compiles once more; the last few stay compiled). Each compiled size is a cache entry
(:mod:`camvideo.engine.cache`) keyed by the model's name, its weights' hash, the target
layer, the input size, the runtime and its version, so a second process starts from the
compiled files instead of exporting again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cache import CacheKey, cached_entry, weights_digest
from .export import EXPORT_FORMAT, export_onnx
from .protocol import BackendUnavailable, note

#: Compiled input sizes kept per backend (a live app switching sources, a job of mixed videos).
KEPT_SIZES = 4


class CompiledBackend:
    """Base class: export, cache and per-size dispatch; subclasses load and run.

    ``threads``: the runtime's intra-op threads, default ``torch.get_num_threads()`` in the
    thread that first runs it (the pipeline sets what it leaves the model). Subclasses set
    ``name`` and implement :meth:`runtime_version`, :meth:`build` (files into a folder from
    the exported ONNX file) and :meth:`load` / :meth:`infer`.
    """

    name = "compiled"
    ONNX_NAME = "model.onnx"

    def __init__(self, model: nn.Module, model_name: str, target: str, threads: int | None = None) -> None:
        self.model = model
        self.model_name = model_name
        self.target = target
        self.threads = threads
        self.failed = False
        self._compiled: OrderedDict[tuple[int, int], Any] = OrderedDict()

    # -- what subclasses provide ----------------------------------------------------------
    def runtime_version(self) -> str:
        raise NotImplementedError

    def build(self, folder: Path, onnx_path: Path) -> None:
        """Turn the exported ``onnx_path`` (inside ``folder``) into this runtime's files."""

    def load(self, folder: Path) -> Any:
        raise NotImplementedError

    def infer(self, compiled: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # -- the protocol ---------------------------------------------------------------------
    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.failed:
            raise BackendUnavailable(f"{self.name} is off for this model")
        size = (int(x.shape[-2]), int(x.shape[-1]))
        compiled = self._compiled.get(size)
        if compiled is None:
            compiled = self._compile(size)
        else:
            self._compiled.move_to_end(size)
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:  # a new batch size compiles here (OpenVINO)
            output, logits = self.infer(compiled, array)
        except Exception as err:
            raise self._give_up("could not run", err) from err
        return torch.from_numpy(np.asarray(output)), torch.from_numpy(np.asarray(logits))

    def close(self) -> None:
        self._compiled.clear()

    def key(self, size: tuple[int, int]) -> CacheKey:
        # The weights are hashed at each compilation (a module's weights may have changed since
        # the last size), and the structure too: two modules with the same state dict but other
        # strides or activations must not share a compiled graph (repr names every module and
        # its settings).
        structure = hashlib.sha256(repr(self.model).encode()).hexdigest()[:16]
        version = f"{self.runtime_version()}; torch {torch.__version__}; export {EXPORT_FORMAT}; net {structure}"
        return CacheKey(self.model_name, weights_digest(self.model), self.target, size, self.name, version)

    def _compile(self, size: tuple[int, int]) -> Any:
        def build(folder: Path) -> None:
            onnx_path = folder / self.ONNX_NAME
            export_onnx(self.model, self.target, size, onnx_path)
            self.build(folder, onnx_path)

        try:
            compiled = cached_entry(self.key(size), build, self.load, note=note)
        except Exception as err:  # an unsupported operator, an unknown CPU, a full disk
            raise self._give_up("could not compile", err) from err
        self._compiled[size] = compiled
        while len(self._compiled) > KEPT_SIZES:
            self._compiled.popitem(last=False)
        return compiled

    def _give_up(self, what: str, err: Exception) -> BackendUnavailable:
        """Off for good, with one line saying why; the caller goes on with torch."""
        self.failed = True
        self._compiled.clear()
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        note(f"{self.name} {what} {self.model_name} ({type(err).__name__}: {reason}); using torch")
        return BackendUnavailable(reason)

    def resolved_threads(self) -> int:
        return max(1, int(self.threads or torch.get_num_threads()))
