"""ONNX Runtime on the CPU: the exported graph, optimised at load.

Threads: ``intra_op_num_threads`` as given, one inter-op thread, sequential execution, and
``session.intra_op.allow_spinning=0`` so the worker threads sleep between frames instead
of spinning on a core the decoder and the encoder need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .compiled import CompiledBackend
from .export import INPUT_NAME


class OnnxRuntimeBackend(CompiledBackend):
    name = "onnxruntime"

    def runtime_version(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"

    def load(self, folder: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.resolved_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return ort.InferenceSession(str(folder / self.ONNX_NAME), options, providers=["CPUExecutionProvider"])

    def infer(self, compiled: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        output, logits = compiled.run(None, {INPUT_NAME: x})
        return output, logits
