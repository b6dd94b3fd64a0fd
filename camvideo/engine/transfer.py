"""Moving uint8 frames to the device, the way the GPU likes it.

On CUDA, decoded frames are copied into preallocated pinned (page-locked) host buffers
and cross the bus as uint8 (4x less than float32) with non-blocking copies on a copy
stream of their own; the compute stream waits on an event, so the next batch's upload
overlaps the current batch's compute. Buffers rotate through a few slots and are reused
only once the copy that read them has finished; the slots are one caller's at a time
(a lock of their own, not the Explainer's: an upload never waits for a forward). On the
CPU there is nothing to move: the numpy batch is wrapped as a tensor without a copy.
"""

from __future__ import annotations

import threading

import numpy as np
import torch


class FrameUploader:
    """uint8 (N, H, W, 3) host batches -> uint8 tensors on ``device``."""

    def __init__(self, device: torch.device, slots: int = 3) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._slots = max(2, slots)
        self._next = 0
        self._pinned: list[torch.Tensor | None] = [None] * self._slots
        self._done: list[torch.cuda.Event | None] = [None] * self._slots
        self._stream = torch.cuda.Stream(device=device) if self.cuda else None
        self._slots_lock = threading.Lock()

    def upload(self, images: np.ndarray) -> torch.Tensor:
        """The batch on the device, ready for use on the current stream."""
        if not self.cuda:
            return torch.from_numpy(np.ascontiguousarray(images))
        with self._slots_lock:
            return self._upload(images)

    def _upload(self, images: np.ndarray) -> torch.Tensor:
        slot = self._next
        self._next = (slot + 1) % self._slots
        if self._done[slot] is not None:
            self._done[slot].synchronize()  # the copy that last read this buffer has finished
        buffer = self._pinned[slot]
        if buffer is None or buffer.numel() < images.size:
            buffer = torch.empty(images.size, dtype=torch.uint8, pin_memory=True)
            self._pinned[slot] = buffer
        staged = buffer[: images.size].view(images.shape)
        staged.numpy()[...] = images  # one host memcpy into page-locked memory
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._stream):
            on_device = torch.empty(images.shape, dtype=torch.uint8, device=self.device)
            on_device.copy_(staged, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        compute.wait_event(event)
        on_device.record_stream(compute)  # the allocator must not reuse it before compute is done
        self._done[slot] = event
        return on_device
