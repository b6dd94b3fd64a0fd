"""The inference backends (torch, OpenVINO, ONNX Runtime) and the forward-only gradients.

Every reference here is the test's own: a float64 copy of the model, the target layer's
output taken by the test's hook (a Swin's channels-last map permuted here), its gradient
from ``torch.autograd.grad`` through the whole float64 network, and the published
formulas. Each backend x method must agree with it per frame: correlation >= 0.9999 and
max error <= 1e-4 of the map's range, with identical top-1 classes.

The models: EfficientNet-Lite0 (the default, with its weights, offline), a torchvision
ResNet-18, and torchvision's ConvNeXt (LayerNorm head) and Swin (channels-last maps) built
with fewer blocks than their ``_tiny`` variants (same code, a CI-sized export), random
weights. Score-CAM's K masked forwards per frame are checked on a small BatchNorm CNN
(K = 8). Compiled models go to a temporary cache folder, never the user's.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camvideo import Explainer
from camvideo.engine.backends import COMPILED_BACKENDS, fold_batchnorm, installed
from camvideo.engine.cache import list_entries
from camvideo.engine.methods import make_method
from camvideo.errors import ModelError

BACKENDS = ["torch"] + [b for b in COMPILED_BACKENDS if installed(b)]
FORWARD = ["cam", "gradcam", "hirescam", "gradcam++", "layercam", "eigencam"]
GRADIENT = ["gradcam", "hirescam", "gradcam++", "layercam"]


@pytest.fixture(scope="module", autouse=True)
def cache_folder(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAMVIDEO_CACHE_DIR", str(tmp_path_factory.mktemp("compiled")))
        yield


# -- models ---------------------------------------------------------------------------------------
def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights, BatchNorm statistics included (norm gains around 1), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return net.eval()


def resnet18() -> nn.Module:
    import torchvision

    return randomise(torchvision.models.resnet18(weights=None, num_classes=10), 1)


def small_convnext() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    blocks = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)]
    return randomise(ConvNeXt(blocks, num_classes=10), 2)


def small_swin() -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return randomise(SwinTransformer([4, 4], 16, [1, 1], [2, 2], [4, 4], num_classes=10), 3)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.BatchNorm2d(8)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def channels_first(output: torch.Tensor) -> torch.Tensor:
    return output


def swin_layout(output: torch.Tensor) -> torch.Tensor:
    return output.permute(0, 3, 1, 2)  # torchvision Swin's (N, h, w, C)


def batch(seed: int, h: int, w: int, n: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32))


# -- the float64 reference ------------------------------------------------------------------------
def float64_copy(net: nn.Module) -> nn.Module:
    """Made before any Explainer hooks ``net`` (a deep copy would copy the hook's owner)."""
    ref = copy.deepcopy(net).double().eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def reference(ref: nn.Module, layer: str, layout, x: torch.Tensor) -> dict:
    """A (N, K, h, w), g = ∂y_c/∂A by autograd through the whole float64 network ``ref``, logits."""
    box: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        box["out"] = output.detach().requires_grad_()
        return box["out"].clone()

    handle = dict(ref.named_modules())[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = ref(x.double())
            classes = logits.argmax(1)
            (g,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), box["out"])
    finally:
        handle.remove()
    return {"A": layout(box["out"].detach()), "g": layout(g), "logits": logits.detach(), "classes": classes, "net": ref}


def formula(method: str, r: dict, linear: nn.Linear, norm: nn.Module | None = None) -> torch.Tensor:
    A, g, c = r["A"], r["g"], r["classes"]
    if method == "cam":
        w = linear.weight.detach().double()[c]  # (N, K)
        if norm is None:
            return torch.einsum("nk,nkhw->nhw", w, A)
        p = A.mean(dim=(2, 3))
        mu, sigma = p.mean(1), (p.var(1, unbiased=False) + norm.eps).sqrt()
        centred = (A - mu[:, None, None, None]) / sigma[:, None, None, None]
        return torch.einsum("nk,nkhw->nhw", w * norm.weight.detach().double(), centred)
    if method == "gradcam":
        return F.relu(torch.einsum("nk,nkhw->nhw", g.mean(dim=(2, 3)), A))
    if method == "hirescam":
        return F.relu((g * A).sum(1))
    if method == "layercam":
        return F.relu((F.relu(g) * A).sum(1))
    if method == "gradcam++":
        g2, g3 = g**2, g**3
        denom = 2 * g2 + A.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
        return F.relu(torch.einsum("nk,nkhw->nhw", (alpha * F.relu(g)).sum(dim=(2, 3)), A))
    if method == "eigencam":
        n, k, h, w = A.shape
        flat = A.reshape(n, k, h * w).transpose(1, 2)
        centred = flat - flat.mean(1, keepdim=True)
        maps = []
        for i in range(n):
            _, _, vh = np.linalg.svd(centred[i].numpy(), full_matrices=False)
            proj = centred[i].numpy() @ vh[0]
            mean = A[i].mean(0).reshape(-1).numpy()
            if np.dot(proj, mean - mean.mean()) < 0:
                proj = -proj
            maps.append(torch.from_numpy(proj.reshape(h, w)))
        return torch.stack(maps)
    raise AssertionError(method)


def scorecam_reference(r: dict, x: torch.Tensor) -> torch.Tensor:
    A, net, c = r["A"], r["net"], r["classes"]
    maps = []
    for i in range(A.shape[0]):
        up = F.interpolate(A[i : i + 1], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
        lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
        masks = torch.where(hi > lo, (up - lo) / torch.where(hi > lo, hi - lo, 1.0), 0.0)
        with torch.no_grad():
            probs = torch.softmax(net(x[i : i + 1].double() * masks[:, None]), dim=1)[:, c[i]]
        maps.append(F.relu(torch.einsum("k,khw->hw", probs, A[i])))
    return torch.stack(maps)


def assert_close_maps(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    for i, (a, b) in enumerate(zip(got.double(), want)):
        span = float(b.max() - b.min())
        err = float((a - b).abs().max())
        assert err <= 1e-4 * max(span, 1e-12) + 1e-9, f"{what} frame {i}: max error {err:.3g}, range {span:.3g}"
        if span > 0 and float(a.std()) > 0:
            corr = float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])
            assert corr >= 0.9999, f"{what} frame {i}: correlation {corr}"


def check_methods(ex: Explainer, ref: nn.Module, layout, x: torch.Tensor, backend: str, methods: list[str]) -> None:
    r = reference(ref, ex.target_layer, layout, x)
    modules = dict(ref.named_modules())
    linear = modules[ex.report.cam_linear]
    norm = modules[ex.report.cam_norm] if ex.report.cam_norm else None
    for method in methods:
        ex.set_method(method)
        out = ex.explain(x)
        what = f"{type(ref).__name__} {tuple(x.shape[-2:])} {backend} {method}"
        assert ex.describe().endswith(backend), f"{what}: {ex.describe()}"  # no silent fallback
        assert torch.equal(out.classes, r["classes"]), what
        want = scorecam_reference(r, x) if method == "scorecam" else formula(method, r, linear, norm)
        assert_close_maps(out.maps, want, what)


# -- every backend and method against the float64 reference ---------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_lite0_every_method_at_two_sizes(backend: str) -> None:
    try:
        ex = Explainer("efficientnet_lite0", method="cam", device="cpu", backend=backend)
    except ModelError as err:
        pytest.skip(f"efficientnet_lite0 unavailable: {err}")
    with ex:
        ref = float64_copy(ex.model)  # the weights as loaded (the torch path runs a folded copy)
        for size, seed in (((96, 128), 1), ((64, 160), 2)):  # the second size compiles once more
            check_methods(ex, ref, channels_first, batch(seed, *size), backend, FORWARD)
    if backend != "torch":  # one compiled entry per input size, with the layer and the runtime
        keys = [e.key for e in list_entries() if e.key is not None and e.key.model == "efficientnet_lite0"]
        sizes = sorted(tuple(k.input_size) for k in keys if k.backend == backend)
        assert sizes == [(64, 160), (96, 128)] and all(k.layer == "head" for k in keys)


CASES = {
    "resnet18": (resnet18, channels_first, [(64, 96)]),  # two sizes: Lite0's test
    "convnext": (small_convnext, channels_first, [(64, 96)]),
    "swin": (small_swin, swin_layout, [(64, 96)]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_torchvision_models_every_method(name: str, backend: str) -> None:
    build, layout, sizes = CASES[name]
    net = build()
    ref = float64_copy(net)
    with Explainer(net, method="cam", device="cpu", backend=backend, class_names=list("abcdefghij")) as ex:
        for i, size in enumerate(sizes):
            check_methods(ex, ref, layout, batch(10 + i, *size), backend, FORWARD)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scorecam_on_every_backend(backend: str) -> None:
    net = randomise(SmallCNN(), 4)
    ref = float64_copy(net)
    with Explainer(net, method="scorecam", device="cpu", backend=backend, class_names=list("abcde")) as ex:
        check_methods(ex, ref, channels_first, batch(5, 32, 48), backend, ["scorecam"])


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_two_structures_with_the_same_weights_never_share_a_compiled_model(backend: str) -> None:
    """A review found that the cache key named a module by its class and weights only: the
    same state dict in another structure (another activation, another stride) loaded the
    first one's compiled graph. Each must give its own torch maps and logits."""
    outputs = []
    for act, stride in ((nn.ReLU(), 1), (nn.Tanh(), 1), (nn.ReLU(), 2)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, stride, 1), act, nn.Conv2d(8, 8, 3, 1, 1),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()  # fmt: skip
        x = batch(9, 32, 32, n=1)
        with torch.no_grad():
            expected = net(x)
        with Explainer(net, method="cam", layer="2", device="cpu", backend=backend, class_names=list("abc")) as ex:
            out = ex.explain(x)
            assert ex.describe().endswith(backend)  # the compiled runtime ran, no fallback
        assert torch.allclose(out.logits, expected, atol=1e-5), (act, stride)
        assert tuple(out.maps.shape[-2:]) == (32 // stride, 32 // stride)
        outputs.append(out.logits)
    assert not torch.allclose(outputs[0], outputs[1])  # the structures really differ


# -- forward-only gradients -----------------------------------------------------------------------
@pytest.mark.parametrize("build", [resnet18, small_convnext], ids=["resnet18", "convnext"])
def test_forward_only_gradients_equal_the_backward_pass(build) -> None:
    net = build()
    x = batch(6, 64, 96)
    with Explainer(net, method="gradcam", device="cpu", backend="torch", class_names=list("abcdefghij")) as ex:
        report = ex.report
    select = lambda logits: logits.topk(2, dim=1).indices  # noqa: E731 - two targets per frame
    for method in GRADIENT:
        with make_method(method, net, report) as short, make_method(method, net, report, shortcut=False) as full:
            assert short.path == "forward-only (pooled head)" and full.path == "backward through the network"
            got, logits, classes = short(x, select)
            want, logits_full, classes_full = full(x, select)
        assert torch.equal(classes, classes_full)
        for t in range(2):
            assert_close_maps(got[:, t], want[:, t].double(), f"{type(net).__name__} {method} target {t}")


def tiny_class_token_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    net = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5)
    return randomise(net, 7)  # torchvision starts the head at zero: randomised


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_token_vit_takes_the_backward_pass(backend: str) -> None:
    net = tiny_class_token_vit()
    ref = float64_copy(net)
    x = batch(8, 32, 32)
    with Explainer(
        net, method="gradcam", device="cpu", backend=backend, class_names=list("abcde"), input_size=32
    ) as ex:
        for method in GRADIENT:
            ex.set_method(method)
            assert ex.describe() == f"{method}: backward through the network, torch" and ex.backend == "torch"
            out = ex.explain(x)
            r = reference(ref, ex.target_layer, lambda t: t[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4), x)
            assert_close_maps(out.maps, formula(method, r, None), f"vit {method}")


def test_auto_picks_a_compiled_backend_where_the_method_can_use_it() -> None:
    if len(BACKENDS) == 1:
        pytest.skip("no compiled runtime installed")
    try:
        ex = Explainer("efficientnet_lite0", method="gradcam", device="cpu")
    except ModelError as err:
        pytest.skip(f"efficientnet_lite0 unavailable: {err}")
    with ex:
        assert ex.describe() == f"gradcam: forward-only (pooled head), {COMPILED_BACKENDS[0]}"
        assert ex.backend == COMPILED_BACKENDS[0]
    # a module passed in runs on torch under auto (a compiled copy would not follow its weights)
    with Explainer(randomise(SmallCNN(), 9), method="cam", device="cpu", class_names=list("abcde")) as ex:
        assert ex.describe() == "cam: forward only, torch"


# -- fallback and refusals ------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["export", "inference"])
@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_a_failing_export_says_so_once_and_gives_the_torch_maps(backend: str, where: str, monkeypatch, capsys) -> None:
    from camvideo.engine.backends import compiled, openvino_backend, ort_backend

    def broken(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX opset 17 is not supported")

    if where == "export":
        monkeypatch.setattr(compiled, "export_onnx", broken)
    else:
        runtime = {"openvino": openvino_backend.OpenVinoBackend, "onnxruntime": ort_backend.OnnxRuntimeBackend}
        monkeypatch.setattr(runtime[backend], "infer", broken)
    net = randomise(SmallCNN(), 11)
    x = batch(12, 40, 56)
    torch_maps = {}
    with Explainer(net, method="cam", device="cpu", backend="torch", class_names=list("abcde")) as ex:
        for method in ("cam", "gradcam", "scorecam"):
            ex.set_method(method)
            torch_maps[method] = ex.explain(x).maps
    capsys.readouterr()
    with Explainer(net, method="cam", device="cpu", backend=backend, class_names=list("abcde")) as ex:
        for method in ("cam", "gradcam", "scorecam"):
            ex.set_method(method)
            torch.testing.assert_close(ex.explain(x).maps, torch_maps[method], rtol=0, atol=0)
            assert ex.describe().endswith(", torch")
    lines = capsys.readouterr().err.strip().splitlines()
    said = "could not compile" if where == "export" else "could not run"
    assert len(lines) == 1 and lines[0].startswith(f"camvideo: {backend} {said} SmallCNN"), lines
    assert "frobnicate" in lines[0]


def test_an_explicit_runtime_that_is_not_installed_names_the_pip_command(monkeypatch) -> None:
    from camvideo.engine import backends

    monkeypatch.setattr(backends, "installed", lambda name: False)
    with pytest.raises(ModelError, match=r"backend 'onnxruntime' is not installed; pip install"):
        Explainer(SmallCNN().eval(), device="cpu", backend="onnxruntime", class_names=list("abcde"))
    monkeypatch.undo()
    if len(BACKENDS) > 1:  # a compiled runtime runs float32 on the CPU: bf16 is torch's
        with pytest.raises(ModelError, match="runs float32 on the CPU"):
            Explainer(SmallCNN().eval(), device="cpu", backend=BACKENDS[1], precision="bf16", class_names=list("abcde"))
    monkeypatch.setattr(backends, "installed", lambda name: False)
    with pytest.raises(ModelError, match="unknown backend 'tensorrt'"):
        Explainer(SmallCNN().eval(), device="cpu", backend="tensorrt", class_names=list("abcde"))
    # auto without any runtime: torch, no error
    with Explainer("efficientnet_lite0", method="cam", device="cpu") as ex:
        assert ex.describe() == "cam: forward only, torch"


# -- BatchNorm folding ----------------------------------------------------------------------------
def test_batchnorm_folding_is_exact_and_leaves_the_hooked_output_and_the_model_alone() -> None:
    net = randomise(SmallCNN(), 13)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = batch(14, 32, 48)
    folded = fold_batchnorm(net, x, "features")
    assert folded is not net and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the model is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    # hooked at the second convolution, its BatchNorm must stay (the hook sees the conv's output)
    kept = fold_batchnorm(net, x, "features.3")
    assert isinstance(kept.features[4], nn.BatchNorm2d) and not isinstance(kept.features[1], nn.BatchNorm2d)


# -- issue 19: the render thread never waits for the forward --------------------------------------
class BlockingNet(nn.Module):
    """A CNN whose forward, once armed, waits for ``release`` (inside the Explainer's lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            self.entered.set()
            assert self.release.wait(60)
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_to_device_does_not_wait_for_a_running_forward() -> None:
    net = BlockingNet().eval()
    ex = Explainer(net, method="cam", device="cpu", backend="torch", class_names=list("abc"))
    frame = np.zeros((720, 1280, 3), np.uint8)
    net.armed = True
    worker = threading.Thread(target=ex.explain, args=(np.zeros((1, 32, 32, 3), np.uint8),))
    worker.start()
    try:
        assert net.entered.wait(60)  # the forward now holds the lock
        uploaded = threading.Event()
        threading.Thread(target=lambda: (ex.to_device(frame), uploaded.set()), daemon=True).start()
        assert uploaded.wait(20), "to_device waited for the forward"
        assert worker.is_alive()  # the forward was still running all along
    finally:
        net.release.set()
        worker.join(60)
    ex.close()


# -- issue 19: Score-CAM's masks are built a chunk at a time --------------------------------------
def test_scorecam_mask_memory_does_not_grow_with_the_batch(monkeypatch) -> None:
    net = randomise(SmallCNN(), 15)
    largest: list[int] = []
    interpolate = F.interpolate

    def recording(*args, **kwargs):
        out = interpolate(*args, **kwargs)
        largest.append(out.numel())
        return out

    peaks = []
    with Explainer(net, method="scorecam", device="cpu", backend="torch", class_names=list("abcde")) as ex:
        ex.set_method("scorecam")
        for n in (1, 6):
            x = batch(16, 32, 48, n=n)
            largest.clear()
            monkeypatch.setattr(F, "interpolate", recording)
            ex.explain(x)
            monkeypatch.setattr(F, "interpolate", interpolate)
            peaks.append(max(largest))
    chunk = 64  # the default: every one of the 8 channels fits one chunk
    assert peaks[0] == peaks[1] <= min(chunk, 8) * 32 * 48
