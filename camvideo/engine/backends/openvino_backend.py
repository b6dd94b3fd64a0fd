"""OpenVINO on the CPU: the exported graph saved as OpenVINO IR, compiled per batch shape.

The IR keeps the batch axis dynamic; each batch size a video uses (the batch, and a last
shorter one) is compiled with static shapes, which OpenVINO's CPU plugin runs fastest.
Settings: ``INFERENCE_NUM_THREADS`` as given, ``PERFORMANCE_HINT=LATENCY`` (one stream),
``INFERENCE_PRECISION_HINT=f32`` (on a CPU with bf16 units the default would be bf16,
which is not exact), no CPU pinning (the cores are shared with the codecs). Its worker
threads sleep when idle (benchmarks/bench_backends.py measures the idle CPU time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .compiled import CompiledBackend

IR_NAME = "model.xml"


class OpenVinoModel:
    """A read IR and its compiled requests by batch size."""

    def __init__(self, core: Any, model: Any, config: dict[str, object]) -> None:
        self.core = core
        self.model = model
        self.config = config
        self.requests: dict[int, Any] = {}

    def request(self, batch: int) -> Any:
        found = self.requests.get(batch)
        if found is None:
            model = self.model.clone()
            model.reshape([batch, *[int(d.get_length()) for d in list(self.model.input(0).get_partial_shape())[1:]]])
            compiled = self.core.compile_model(model, "CPU", self.config)
            found = self.requests[batch] = compiled.create_infer_request()
        return found


class OpenVinoBackend(CompiledBackend):
    name = "openvino"

    def runtime_version(self) -> str:
        import openvino

        return f"openvino {openvino.__version__}"

    def build(self, folder: Path, onnx_path: Path) -> None:
        import openvino as ov

        ov.save_model(ov.convert_model(str(onnx_path)), str(folder / IR_NAME), compress_to_fp16=False)
        onnx_path.unlink()

    def load(self, folder: Path) -> Any:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(folder / IR_NAME))
        config = {
            "INFERENCE_NUM_THREADS": self.resolved_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": False,
        }
        loaded = OpenVinoModel(core, model, config)
        loaded.request(1)  # compile now: a broken entry fails here, and is rebuilt
        return loaded

    def infer(self, compiled: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request = compiled.request(int(x.shape[0]))
        # no copy in (the call is synchronous); the outputs are copied out of the request's buffers
        result = request.infer({0: x}, share_inputs=True, share_outputs=True)
        return result[request.model_outputs[0]].copy(), result[request.model_outputs[1]].copy()
