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
from camvideo.engine import FrameUploader
from camvideo.render import FrameDownloader

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
    with (
        Explainer(method=method, device="cpu") as cpu,
        Explainer(method=method, device="cuda", precision=precision) as gpu,
    ):
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


STALL_CYCLES = 100_000_000  # torch.cuda._sleep spins a kernel this many GPU clocks: ~50 ms at ~2 GHz


@cuda
@pytest.mark.skipif(not hasattr(torch.cuda, "_sleep"), reason="torch.cuda._sleep (a spin kernel) missing")
def test_pinned_uploads_in_flight_arrive_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    """More uploads than pinned slots, all queued before anything synchronises.

    The copy stream is held up by a spin kernel before each copy, so each copy is still
    waiting when the host comes round to its slot again: only the reuse guard (wait for
    the copy that last read the buffer) keeps the next batch from overwriting the bytes
    that copy has not read yet. The caller's array is scribbled over as soon as upload()
    returns (a decoder reuses its buffers): the device must still get the original values.
    """
    device = torch.device("cuda")
    streams: list[torch.cuda.Stream] = []
    make_stream = torch.cuda.Stream

    def recorded_stream(*args, **kwargs):  # catch the uploader's own copy stream
        stream = make_stream(*args, **kwargs)
        streams.append(stream)
        return stream

    monkeypatch.setattr(torch.cuda, "Stream", recorded_stream)
    up = FrameUploader(device, slots=3)
    monkeypatch.undo()
    assert len(streams) == 1, "the uploader copies on a stream of its own"
    sizes = [4, 3, 2, 2, 3, 4, 3, 2]  # slot 0 gets 4, 2, 3 frames: smaller batches reuse a prefix
    wanted = [frames(n, 90, 160) ^ np.uint8(i) for i, n in enumerate(sizes)]  # each batch distinct
    torch.cuda.synchronize()
    on_device = []
    for i, want in enumerate(wanted):
        with torch.cuda.stream(streams[0]):
            torch.cuda._sleep(STALL_CYCLES)  # this batch's copy waits behind ~50 ms of GPU time
        host = want.copy()
        on_device.append(up.upload(host))
        host[...] = 255 - host  # the caller reuses its array at once
    # (the host queues these 8 uploads in milliseconds, well ahead of 400 ms of stalls; no
    # assertion on that: how far ahead depends on the machine's load, not on the code)
    torch.cuda.synchronize()
    for i, (t, want) in enumerate(zip(on_device, wanted)):
        assert t.device.type == "cuda" and t.dtype == torch.uint8 and tuple(t.shape) == want.shape
        np.testing.assert_array_equal(t.cpu().numpy(), want, err_msg=f"upload {i}")

    # downloads: exact values, for work still queued on the compute stream, and each a fresh
    # array (one pinned buffer serves every call, so a view of it would change under us)
    down = FrameDownloader(device)
    got = []
    for t in on_device:
        torch.cuda._sleep(STALL_CYCLES)  # on the current stream: the inversion below waits behind it
        got.append(down.download(255 - t))
    for i, (array, want) in enumerate(zip(got, wanted)):
        assert isinstance(array, np.ndarray) and array.dtype == np.uint8
        np.testing.assert_array_equal(array, 255 - want, err_msg=f"download {i}")


def test_cpu_transfers_do_not_copy() -> None:
    batch = frames(2)
    t = FrameUploader(torch.device("cpu")).upload(batch)
    assert t.data_ptr() == batch.__array_interface__["data"][0]
    back = FrameDownloader(torch.device("cpu")).download(t)
    assert isinstance(back, np.ndarray) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, frames(2))  # the exact values (frames() is deterministic)
    assert np.shares_memory(back, batch)  # and still no copy on the way back


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
