"""The device path: CUDA maps equal CPU float32 maps; fp16/bf16 within 1e-2; transfers and compile.

The CUDA tests run wherever CUDA is present and are skipped cleanly where it is not; the
transfer helpers and torch.compile are also checked on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from camvideo import Explainer, Renderer
from camvideo.render import FrameDownloader, FrameUploader

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
METHODS = ["cam", "gradcam", "hirescam", "gradcam++", "layercam", "eigencam"]


def frames(n: int = 4, h: int = 180, w: int = 320) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max() / b.float().abs().max().clamp_min(1e-12))


@cuda
@pytest.mark.parametrize("method", [m for m in METHODS if m != "rollout"])  # rollout: ViTs only
def test_cuda_maps_equal_cpu_float32(method: str) -> None:
    batch = frames()
    with Explainer(method=method, device="cpu") as cpu, Explainer(method=method, device="cuda") as gpu:
        a, b = cpu.explain(batch), gpu.explain(batch)
        assert b.maps.device.type == "cuda" and b.maps.dtype == torch.float32
        assert torch.equal(a.classes, b.classes.cpu())
        assert relative_error(b.maps, a.maps) < 1e-3


@cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_cuda_half_precision_within_1e2(method: str, precision: str) -> None:
    batch = frames()
    with Explainer(method=method, device="cpu") as cpu, Explainer(method=method, device="cuda", precision=precision) as gpu:
        a = cpu.explain(batch, target=cpu.explain(batch).classes)
        b = gpu.explain(batch, target=a.classes.cuda())
        assert b.maps.dtype == torch.float32
        assert relative_error(b.maps, a.maps) < 1e-2


@cuda
def test_cuda_render_matches_cpu_render() -> None:
    batch = frames(2)
    with Explainer(device="cpu") as ex:
        out = ex.explain(batch)
    cpu = Renderer(backend="opencv").render(torch.from_numpy(batch), out.maps, out.classes, out.scores)
    gpu = Renderer(backend="torch").render(torch.from_numpy(batch).cuda(), out.maps.cuda(), out.classes, out.scores)
    assert np.abs(cpu.images.astype(int) - gpu.images.astype(int)).max() <= 1 and cpu.boxes == gpu.boxes


@cuda
def test_pinned_upload_download_roundtrip() -> None:
    device = torch.device("cuda")
    up, down = FrameUploader(device), FrameDownloader(device)
    for i in range(5):  # more batches than slots: buffers are reused only when free
        batch = frames(3 + i % 2)
        on_device = up.upload(batch)
        assert on_device.device.type == "cuda"
        np.testing.assert_array_equal(down.download(on_device), batch)


def test_cpu_transfers_do_not_copy() -> None:
    batch = frames(2)
    t = FrameUploader(torch.device("cpu")).upload(batch)
    assert t.data_ptr() == batch.__array_interface__["data"][0]
    assert FrameDownloader(torch.device("cpu")).download(t) is not None


@pytest.mark.timeout(300)
def test_torch_compile_gives_the_same_maps() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).eval()  # fmt: skip
    batch = frames(2, 64, 96)
    for method in ("cam", "gradcam"):
        reference = Explainer(net, method=method, device="cpu").explain(batch)
        with Explainer(net, method=method, device="cpu", compile=True) as ex:
            for _ in range(2):  # compiled once, then reused
                out = ex.explain(batch)
                torch.testing.assert_close(out.maps, reference.maps, rtol=1e-4, atol=1e-6)
            assert ex.model is net  # the public model stays the plain module


def test_static_batch_pads_to_one_shape_and_drops_the_copies() -> None:
    from camvideo.jobs import FrameAnnotator
    from camvideo.render import TemporalSmoother
    from camvideo.types import Frame

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).eval()  # fmt: skip
    images = frames(11, 48, 64)
    video = [Frame(index=i, image=images[i], pts=i, time=i / 25) for i in range(11)]
    shapes: list[tuple[int, ...]] = []
    with Explainer(net, method="cam", device="cpu") as ex:
        ex.model.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
        plain = FrameAnnotator(ex, Renderer(), TemporalSmoother(0.25))
        padded = FrameAnnotator(ex, Renderer(), TemporalSmoother(0.25), static_batch=4)
        want = [r for b in (video[0:4], video[4:8], video[8:]) for r in plain(b)]
        shapes.clear()
        got = [r for b in (video[0:4], video[4:8], video[8:]) for r in padded(b)]
    assert [s[0] for s in shapes] == [4, 4, 4]  # the last batch of 3 went in as 4
    assert len(got) == 11
    for a, b in zip(got, want):  # the copy changed nothing: maps, smoothing, classes, pixels
        assert a.classes == b.classes and a.box == b.box
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
