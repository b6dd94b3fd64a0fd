"""Vision transformers, Swin, ConvNeXt, MaxViT and timm models against float64 references.

Every reference here re-derives the map itself: a float64 copy of the model, the hooked
layer's output taken by the test's own hook (a ViT's tokens (N, 1+h*w, C), a Swin's
channels-last (N, h, w, C)), laid on its grid by the test's own indexing, the gradient from
``torch.autograd.grad``, and the published formula in numpy. Attention rollout's reference
recomputes every block's attention by hand from the ViT's weights.

The tiny models are built here with random weights. torchvision starts a ViT's head at
zero (which gives zero gradients everywhere), so every parameter is randomised.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camvideo import Explainer
from camvideo.errors import ModelError

NAMES = ["cat", "dog", "bird", "fish", "frog"]
GRAD_METHODS = ["gradcam", "hirescam", "gradcam++", "layercam"]
ALL_METHODS = GRAD_METHODS + ["scorecam", "eigencam"]


# -- tiny models ---------------------------------------------------------------------------------
def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights everywhere (norm gains around 1), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln" in name) and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return net.eval()


def tiny_vit(seed: int = 0) -> nn.Module:
    """torchvision ViT: 32x32 input, 8-pixel patches (4x4 grid), 3 blocks, class token."""
    from torchvision.models.vision_transformer import VisionTransformer

    return randomise(
        VisionTransformer(32, 8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5), seed
    )


def tiny_swin(seed: int = 0) -> nn.Module:
    """torchvision Swin: 4-pixel patches, 2 stages (one patch merging), 4x4 windows."""
    from torchvision.models.swin_transformer import SwinTransformer

    net = SwinTransformer([4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4], num_classes=5)
    return randomise(net, seed)


def tiny_convnext(seed: int = 0) -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return randomise(ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=5), seed)


def tiny_maxvit(seed: int = 0) -> nn.Module:
    from torchvision.models.maxvit import MaxVit

    net = MaxVit((64, 64), stem_channels=8, partition_size=2, block_channels=[16, 32], block_layers=[1, 1],
                 head_dim=8, stochastic_depth_prob=0.0, num_classes=5)  # fmt: skip
    return randomise(net, seed)


def float64_copy(net: nn.Module) -> nn.Module:
    ref = copy.deepcopy(net).double().eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def frames(seed: int, n: int = 2, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def explainer(net: nn.Module, method: str, size: int = 32, **kw) -> Explainer:
    return Explainer(model=net, method=method, device="cpu", class_names=NAMES, input_size=size, **kw)


# -- float64 references ---------------------------------------------------------------------------
def captured(
    ref: nn.Module, module_name: str, x64: torch.Tensor, to_grid
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(raw output leaf, A (N, C, h, w) float64, logits): the test's own hook makes the
    output a leaf that requires grad; ``to_grid`` is the test's own layout of it."""
    seen = {}

    def hook(module, inputs, output):
        leaf = output.detach().requires_grad_()
        seen["raw"] = leaf
        return leaf

    handle = dict(ref.named_modules())[module_name].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = ref(x64)
    finally:
        handle.remove()
    raw = seen["raw"]
    return raw, to_grid(raw), logits


def vit_grid(raw: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """(N, P + h*w, C) -> (N, C, h, w), token t = P + i*w + j at row i, column j."""
    n, t, c = raw.shape
    side = math.isqrt(t - prefix)
    out = torch.empty(n, c, side, side, dtype=raw.dtype)
    for i in range(side):
        for j in range(side):
            out[:, :, i, j] = raw[:, prefix + i * side + j, :]
    return out


def swin_grid(raw: torch.Tensor) -> torch.Tensor:
    """(N, h, w, C) -> (N, C, h, w)."""
    return torch.stack([raw[..., k] for k in range(raw.shape[-1])], dim=1)


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def formula(method: str, A: np.ndarray, g: np.ndarray) -> np.ndarray:
    if method == "gradcam":
        return relu(np.einsum("nk,nkhw->nhw", g.mean(axis=(2, 3)), A))
    if method == "hirescam":
        return relu((g * A).sum(axis=1))
    if method == "layercam":
        return relu((relu(g) * A).sum(axis=1))
    if method == "gradcam++":
        out = []
        for a_n, g_n in zip(A, g):
            m = np.zeros(a_n.shape[1:])
            for a_k, g_k in zip(a_n, g_n):
                denom = 2 * g_k**2 + a_k.sum() * g_k**3
                alpha = np.where(denom != 0, g_k**2 / np.where(denom != 0, denom, 1.0), 0.0)
                m += (alpha * relu(g_k)).sum() * a_k
            out.append(relu(m))
        return np.stack(out)
    raise AssertionError(method)


def ref_eigencam(A: np.ndarray) -> np.ndarray:
    out = []
    for a in A:
        k, h, w = a.shape
        flat = a.reshape(k, h * w).T
        centred = flat - flat.mean(axis=0, keepdims=True)
        proj = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
        mean_map = a.mean(axis=0).reshape(-1)
        out.append((proj if proj @ (mean_map - mean_map.mean()) >= 0 else -proj).reshape(h, w))
    return np.stack(out)


def ref_scorecam(ref: nn.Module, x64: torch.Tensor, A: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    out = []
    with torch.no_grad():
        for n, c in enumerate(classes.tolist()):
            s = []
            for k in range(A.shape[1]):
                up = F.interpolate(A[n : n + 1, k : k + 1], size=x64.shape[-2:], mode="bilinear", align_corners=False)[
                    0, 0
                ]
                lo, hi = float(up.min()), float(up.max())
                mask = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
                s.append(float(torch.softmax(ref(x64[n : n + 1] * mask), dim=1)[0, c]))
            out.append(relu(np.tensordot(np.array(s), A[n].numpy(), axes=(0, 0))))
    return np.stack(out)


def reference(method: str, ref: nn.Module, layer: str, x64: torch.Tensor, to_grid, classes: torch.Tensor) -> np.ndarray:
    raw, A, logits = captured(ref, layer, x64, to_grid)
    if method == "eigencam":
        return ref_eigencam(A.detach().numpy())
    if method == "scorecam":
        return ref_scorecam(ref, x64, A.detach(), classes)
    (g_raw,) = torch.autograd.grad(logits[torch.arange(len(classes)), classes].sum(), raw)
    return formula(method, A.detach().numpy(), to_grid(g_raw).numpy())


def assert_maps_close(got: torch.Tensor, want: np.ndarray, rtol: float = 2e-4) -> None:
    got64 = got.detach().double().numpy()
    assert got64.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-12)
    err = float(np.abs(got64 - want).max())
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol} x max |ref| {scale:.3g}"
    assert float(np.abs(want).max()) > 0, "the reference map is all zero: the test would prove nothing"


# -- layer rule and token layouts -----------------------------------------------------------------
def test_vit_layer_rule_and_token_reshape_are_reported() -> None:
    ex = explainer(tiny_vit(), "gradcam")
    assert ex.target_layer == "encoder.layers.encoder_layer_2.ln_1"  # the last block's first norm
    layout = ex.report.layout
    assert (layout.kind, layout.prefix, layout.stride) == ("tokens", 1, 8)
    assert "1 prefix token" in ex.report.describe() and "ln_1" in ex.report.describe()
    assert ex.fixed_size and not ex.report.pooled  # the class token: frames are squashed to 32x32
    out = ex.explain(frames(1))
    assert out.maps.shape == (2, 4, 4) and ex.preprocess(frames(1)).shape == (2, 3, 32, 32)


def test_swin_layer_rule_is_the_normalised_last_stage_channels_last() -> None:
    ex = explainer(tiny_swin(), "cam")
    assert ex.target_layer == "norm" and ex.report.layout.kind == "channels_last"
    assert ex.report.cam_linear == "head" and ex.report.pooled and not ex.fixed_size
    assert "channels-last" in ex.report.describe()


# -- every method against its float64 reference -------------------------------------------------
@pytest.mark.parametrize("method", ALL_METHODS)
def test_vit_methods_match_float64_reference(method: str) -> None:
    net = tiny_vit(seed=3)
    ref = float64_copy(net)
    ex = explainer(net, method)
    x = ex.preprocess(frames(10))
    out = ex.explain(x)
    want = reference(method, ref, ex.target_layer, x.double(), vit_grid, out.classes)
    assert_maps_close(out.maps, want, rtol=1e-3 if method == "gradcam++" else 2e-4)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_swin_methods_match_float64_reference(method: str) -> None:
    # Score-CAM's weights are near-uniform softmax scores and a LayerNorm's output is signed:
    # its ReLU'd map is all zero for some random Swins; seed 7 gives a map with content.
    net = tiny_swin(seed=7 if method == "scorecam" else 4)
    ref = float64_copy(net)
    ex = explainer(net, method)
    x = ex.preprocess(frames(11))
    assert x.shape[-2:] == (32, 45)  # aspect kept: Swin pools its tokens
    out = ex.explain(x)
    assert out.maps.shape == (2, 4, 6)
    want = reference(method, ref, "norm", x.double(), swin_grid, out.classes)
    assert_maps_close(out.maps, want, rtol=1e-3 if method == "gradcam++" else 2e-4)


# -- cam where it is exact ----------------------------------------------------------------------
def cam_offsets(ref: nn.Module, linear: str, norm: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b'): the class weights on the map and the logit offset, folding a LayerNorm
    γ, β between the pooling and the linear layer: y = W(γ(p - μ)/σ + β) + b."""
    modules = dict(ref.named_modules())
    W, b = modules[linear].weight, modules[linear].bias
    b = torch.zeros(W.shape[0], dtype=W.dtype) if b is None else b
    if norm is None:
        return W, b
    gamma, beta = modules[norm].weight, modules[norm].bias
    return W * gamma, b + W @ beta


def check_cam_identity(ex: Explainer, ref: nn.Module, x: torch.Tensor, linear: str, norm: str | None) -> None:
    """The spatial mean of each raw CAM map is the logit minus the (folded) bias."""
    out = ex.explain(x, target="top3")
    with torch.no_grad():
        logits64 = ref(x.double())
    assert torch.equal(out.classes, logits64.topk(3, 1).indices)
    W, b = cam_offsets(ref, linear, norm)
    want = logits64.gather(1, out.classes) - b[out.classes]
    scale = float(logits64.abs().max())
    np.testing.assert_allclose(out.maps.double().mean(dim=(2, 3)).numpy(), want.numpy(), rtol=0, atol=2e-4 * scale)


def test_cam_identity_on_swin() -> None:
    net = tiny_swin(seed=5)
    ex = explainer(net, "cam")
    assert ex.report.cam_norm is None
    check_cam_identity(ex, float64_copy(net), ex.preprocess(frames(12)), "head", None)


def test_cam_identity_on_convnext_folds_the_head_layernorm() -> None:
    net = tiny_convnext(seed=6)
    ex = explainer(net, "cam")
    assert (ex.target_layer, ex.report.cam_norm, ex.report.cam_linear) == ("features", "classifier.0", "classifier.2")
    check_cam_identity(ex, float64_copy(net), ex.preprocess(frames(13)), "classifier.2", "classifier.0")


@pytest.mark.parametrize("name,pool", [("test_vit", "avg"), ("test_convnext", None), ("test_maxvit", None)])
def test_cam_identity_on_timm_global_pool_models(name: str, pool: str | None) -> None:
    timm = pytest.importorskip("timm")
    kwargs = {"global_pool": pool} if pool else {}
    net = randomise(timm.create_model(name, pretrained=False, num_classes=5, **kwargs), seed=7)
    ex = explainer(net, "cam", size=160)  # the test models' own size (MaxViT's windows need it)
    linear, norm = ex.report.cam_linear, ex.report.cam_norm
    assert linear is not None
    if name == "test_vit":  # mean of the patch tokens (registers and class token left out) -> fc_norm -> head
        assert (ex.report.layout.kind, norm) == ("tokens", "fc_norm")
    check_cam_identity(ex, float64_copy(net), ex.preprocess(frames(14, h=160, w=160)), linear, norm)


def test_cam_refused_where_the_head_reads_the_class_token() -> None:
    with pytest.raises(ModelError, match="class token.*gradcam"):
        explainer(tiny_vit(), "cam")


def test_auto_method_is_cam_where_exact_and_gradcam_elsewhere() -> None:
    """The CLI's default, ``--method auto``: a ViT (class-token head) gets gradcam, a pooled
    head (Swin) cam; switching to ``auto`` later decides the same way."""
    vit = explainer(tiny_vit(), "auto")
    assert vit.method == "gradcam"
    swin = explainer(tiny_swin(), "auto")
    assert swin.method == "cam"
    swin.set_method("gradcam")
    swin.set_method("Auto")
    assert swin.method == "cam"
    vit.close()
    swin.close()


def test_cam_refused_on_torchvision_maxvit_tanh_head_and_gradcam_works() -> None:
    # torchvision's MaxViT head is pool -> LayerNorm -> Linear -> Tanh -> Linear: the Tanh
    # makes the logit no longer linear in the pooled features, so CAM cannot be exact.
    net = tiny_maxvit(seed=8)
    with pytest.raises(ModelError, match="gradcam"):
        explainer(net, "cam", size=64)
    ex = explainer(net, "gradcam", size=64)
    assert ex.fixed_size  # its windows need the trained grid: frames are squashed
    out = ex.explain(frames(15))
    assert out.maps.shape[0] == 2 and torch.isfinite(out.maps).all()


# -- attention rollout ---------------------------------------------------------------------------
def manual_vit(ref: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The ViT's logits and its head-averaged attention per block, recomputed by hand."""
    n = x.shape[0]
    t = ref.conv_proj(x).flatten(2).transpose(1, 2)
    t = torch.cat([ref.class_token.expand(n, -1, -1), t], dim=1) + ref.encoder.pos_embedding
    attentions = []
    for block in ref.encoder.layers:
        mha = block.self_attention
        y = block.ln_1(t)
        q, k, v = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        heads, d = mha.num_heads, t.shape[-1] // mha.num_heads
        q, k, v = (z.reshape(n, -1, heads, d).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)  # (n, heads, T, T)
        attentions.append(a.mean(dim=1))
        o = (a @ v).transpose(1, 2).reshape(n, -1, heads * d)
        t = t + mha.out_proj(o)
        t = t + block.mlp(block.ln_2(t))
    return ref.heads(ref.encoder.ln(t)[:, 0]), attentions


def test_rollout_matches_float64_reference_on_a_tiny_vit() -> None:
    net = tiny_vit(seed=9)
    ref = float64_copy(net)
    ex = explainer(net, "rollout")
    x = ex.preprocess(frames(16))
    out = ex.explain(x, target="top2")
    with torch.no_grad():
        logits64, attentions = manual_vit(ref, x.double())
    np.testing.assert_allclose(out.logits.double().numpy(), logits64.numpy(), atol=1e-4 * float(logits64.abs().max()))
    want = []
    for i in range(x.shape[0]):
        R = np.eye(attentions[0].shape[-1])
        for a in attentions:
            mixed = 0.5 * a[i].numpy() + 0.5 * np.eye(a.shape[-1])  # rows of a sum to 1: (a + I) / 2 is renormalised
            R = mixed @ R
        want.append(R[0, 1:].reshape(4, 4))
    want = np.stack(want)
    assert out.maps.shape == (2, 2, 4, 4)
    for j in range(2):  # class-agnostic: the same map for each target
        assert_maps_close(out.maps[:, j], want, rtol=1e-5)
    assert not np.allclose(want, want.mean())  # not a flat map


def test_rollout_leaves_need_weights_alone_outside_its_forward_and_unhooks() -> None:
    net = tiny_vit(seed=10)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    ex = explainer(net, "rollout")
    ex.explain(x)
    with torch.no_grad():  # the model itself is unchanged and our hooks are idle
        torch.testing.assert_close(net(x), before)
    ex.close()
    for m in net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_rollout_refused_on_windowed_attention() -> None:
    with pytest.raises(ModelError, match="rollout"):
        explainer(tiny_swin(), "rollout")


def test_rollout_on_timm_vit_matches_torchvision_style_reference() -> None:
    timm = pytest.importorskip("timm")
    net = randomise(timm.create_model("test_vit", pretrained=False, num_classes=5), seed=11)
    ref = float64_copy(net)
    ex = explainer(net, "rollout", size=160)
    x = ex.preprocess(frames(17, n=1, h=160, w=160))
    out = ex.explain(x)
    # by hand: timm's blocks, attention from qkv
    with torch.no_grad():
        t = ref._pos_embed(ref.patch_embed(x.double()))
        t = ref.norm_pre(ref.patch_drop(t))
        R = torch.eye(t.shape[1], dtype=torch.float64)
        for block in ref.blocks:
            attn = block.attn
            y = block.norm1(t)
            n, T, C = y.shape
            qkv = attn.qkv(y).reshape(n, T, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = attn.q_norm(qkv[0]), attn.k_norm(qkv[1]), qkv[2]
            a = torch.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1)
            mixed = (a.mean(dim=1)[0] + torch.eye(T, dtype=torch.float64)) / 2
            R = mixed @ R
            o = attn.proj(attn.norm((a @ v).transpose(1, 2).reshape(n, T, C)))
            t = t + block.ls1(o)
            t = t + block.ls2(block.mlp(block.norm2(t)))
        np.testing.assert_allclose(out.logits.double().numpy(), ref.forward_head(ref.norm(t)).numpy(), atol=1e-3)
    prefix = net.num_prefix_tokens
    side = math.isqrt(R.shape[0] - prefix)
    assert_maps_close(out.maps, R[0, prefix:].reshape(1, side, side).numpy(), rtol=1e-5)


def test_vit_layer_rule_holds_when_built_inside_inference_mode() -> None:
    net = tiny_vit(seed=12)
    with torch.inference_mode():
        ex = explainer(net, "gradcam")
    assert ex.target_layer == "encoder.layers.encoder_layer_2.ln_1"


def test_method_none_picks_cam_where_exact_else_gradcam() -> None:
    assert explainer(tiny_vit(), None).method == "gradcam"  # the class token: cam is refused
    assert explainer(tiny_swin(), None).method == "cam"


@pytest.mark.parametrize("kind,prefix", [("registers", 5), ("distilled", 2)])
@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_timm_prefix_tokens_registers_and_distillation(kind: str, prefix: int, method: str) -> None:
    # a class token + 4 register tokens (ViT-reg), a class + a distillation token (DeiT): the
    # prefix is dropped, whatever its length, and the patches are laid on their 4x4 grid
    pytest.importorskip("timm")
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    kw = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
    net = VisionTransformer(reg_tokens=4, **kw) if kind == "registers" else VisionTransformerDistilled(**kw)
    net = randomise(net, seed=13)
    ref = float64_copy(net)
    ex = explainer(net, method)
    assert (ex.target_layer, ex.report.layout.prefix) == ("blocks.1.norm1", prefix)
    x = ex.preprocess(frames(18, h=32, w=32))
    out = ex.explain(x)
    assert out.maps.shape == (2, 4, 4)
    want = reference(method, ref, ex.target_layer, x.double(), lambda raw: vit_grid(raw, prefix), out.classes)
    assert_maps_close(out.maps, want)


# -- attention probabilities are never a feature map (issue 13 review, P1) -----------------------
class _SoftmaxAttention(nn.Module):
    """vit-pytorch style: nn.Softmax then nn.Dropout on the (N, heads, T, T) probabilities."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(0.0)
        self.to_qkv = nn.Linear(dim, dim * 3)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, T, C = x.shape
        q, k, v = self.to_qkv(self.norm(x)).reshape(n, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = self.dropout(self.attend(q @ k.transpose(-2, -1) * self.scale))
        return self.to_out((attn @ v).transpose(1, 2).reshape(n, T, C))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = _SoftmaxAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(self.norm2(x))


class _HandViT(nn.Module):
    """A hand-written ViT (vit-pytorch layout): 32x32 input, 8-pixel patches, class token."""

    def __init__(self, dim: int = 16, depth: int = 2, heads: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 17, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t)[:, 0])


def test_hand_written_vit_never_targets_the_attention_probabilities() -> None:
    ex = explainer(randomise(_HandViT(), seed=21), "gradcam")
    # the last block's first norm (vit-pytorch keeps it inside its attention module)
    assert ex.target_layer == "blocks.1.attn.norm"
    assert (ex.report.layout.kind, ex.report.layout.prefix) == ("tokens", 1)
    assert ex.explain(frames(22, h=32, w=32)).maps.shape == (2, 4, 4)  # the patch grid, not 17x17


@pytest.mark.parametrize("name", ["cait", "vit_unfused"])
def test_timm_attention_probabilities_are_never_the_target(name: str, monkeypatch) -> None:
    timm = pytest.importorskip("timm")
    if name == "cait":
        net = timm.create_model("cait_xxs24_224", pretrained=False, num_classes=5, img_size=32, patch_size=8, depth=2)
        # the documented rule: the last norm whose patch tokens reach the logits, here the
        # first norm of the last class-attention block, where the class token reads the patches
        want = "blocks_token_only.1.norm1"
    else:
        from timm.models.vision_transformer import VisionTransformer

        net = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
        for module in net.modules():  # what TIMM_FUSED_ATTN=0 does
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
        want = "blocks.1.norm1"
    ex = explainer(randomise(net, seed=23), "gradcam")
    assert ex.target_layer == want
    assert ex.explain(frames(24, h=32, w=32)).maps.shape == (2, 4, 4)


def test_explainer_without_a_method_is_auto_on_a_vit() -> None:
    # the Python default is "auto", as on the command line: cam is refused on a class-token
    # head, so a ViT built with no method named gets gradcam instead of an error
    ex = Explainer(model=tiny_vit(seed=25), device="cpu", class_names=NAMES, input_size=32)
    assert ex.method == "gradcam"
    assert ex.explain(frames(26, h=32, w=32)).maps.shape == (2, 4, 4)
    from camvideo.options import ModelOptions  # what the Ray workers build theirs from

    assert ModelOptions().method == "auto"


def timm_rollout_reference(ref: nn.Module, x64: torch.Tensor) -> torch.Tensor:
    """R (T, T) in float64 for one image, by hand from timm's blocks (attention from qkv)."""
    with torch.no_grad():
        t = ref.norm_pre(ref.patch_drop(ref._pos_embed(ref.patch_embed(x64))))
        R = torch.eye(t.shape[1], dtype=torch.float64)
        for block in ref.blocks:
            attn = block.attn
            y = block.norm1(t)
            n, T, C = y.shape
            qkv = attn.qkv(y).reshape(n, T, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
            a = torch.softmax(attn.q_norm(qkv[0]) @ attn.k_norm(qkv[1]).transpose(-2, -1) * attn.scale, dim=-1)
            R = ((a.mean(dim=1)[0] + torch.eye(T, dtype=torch.float64)) / 2) @ R
            t = t + block.ls1(attn.proj(attn.norm((a @ qkv[2]).transpose(1, 2).reshape(n, T, C))))
            t = t + block.ls2(block.mlp(block.norm2(t)))
    return R


@pytest.mark.parametrize("kind", ["map_pool", "registers_no_class_token"])
def test_rollout_prefix_comes_from_the_model_not_the_target_layer(kind: str) -> None:
    # attention-pooled heads (target attn_pool.kv, whose input has no prefix) and register
    # tokens without a class token: the P prefix tokens come from the model, and with no
    # class token the map is the mean of the patch tokens' rows of R over the patch columns
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    kw = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5, class_token=False)
    extra = dict(global_pool="map") if kind == "map_pool" else dict(reg_tokens=4, global_pool="avg")
    net = randomise(VisionTransformer(**kw, **extra), seed=27)
    prefix = net.num_prefix_tokens
    assert prefix == (0 if kind == "map_pool" else 4)
    ref = float64_copy(net)
    ex = explainer(net, "rollout")
    x = ex.preprocess(frames(28, n=1, h=32, w=32))
    out = ex.explain(x)
    R = timm_rollout_reference(ref, x.double())
    want = R[prefix:, prefix:].mean(dim=0).reshape(1, 4, 4)
    assert_maps_close(out.maps, want.numpy(), rtol=1e-5)


def test_rollout_with_a_class_token_under_a_map_pool_uses_the_patch_rows() -> None:
    # the class token is there (P = 1) but the head pools the patches by attention and never
    # reads it: the map is the patch rows' mean, over the patch columns
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    kw = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
    net = randomise(VisionTransformer(global_pool="map", **kw), seed=29)
    ref = float64_copy(net)
    ex = explainer(net, "rollout")
    x = ex.preprocess(frames(30, n=1, h=32, w=32))
    R = timm_rollout_reference(ref, x.double())
    assert_maps_close(ex.explain(x).maps, R[1:, 1:].mean(dim=0).reshape(1, 4, 4).numpy(), rtol=1e-5)
