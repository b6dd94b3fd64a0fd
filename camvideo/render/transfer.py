"""Moving the finished uint8 frames back from the device to the host.

(The upload of decoded frames serves the model's input: :class:`camvideo.engine.transfer.FrameUploader`.)
"""

from __future__ import annotations

import numpy as np
import torch


class FrameDownloader:
    """Device uint8 tensors -> host numpy arrays through one pinned buffer per call.

    The result is a fresh array (cloned out of the pinned buffer), so it can outlive the
    next batch.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._pinned: torch.Tensor | None = None

    def download(self, tensor: torch.Tensor) -> np.ndarray:
        if not self.cuda:
            return tensor.numpy()
        n = tensor.numel()
        if self._pinned is None or self._pinned.numel() < n:
            self._pinned = torch.empty(n, dtype=tensor.dtype, pin_memory=True)
        staged = self._pinned[:n].view(tensor.shape)
        staged.copy_(tensor, non_blocking=True)
        torch.cuda.current_stream(tensor.device).synchronize()
        return staged.numpy().copy()
