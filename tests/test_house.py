"""The house rules of issue 10, and the bugs its review found (each test failed before its fix).

The import layers and forbidden imports are import-linter contracts (pyproject.toml), run
by ``.ci/run``; what they cannot say is checked here: only public names cross modules (no
``from X import _name``, no ``module._name`` or ``Imported._name`` on a name imported from
another camvideo module), no import cycles between modules (function-level imports
included), modules stay small, option names have one home, the writers' protocol holds
under threads.
"""

from __future__ import annotations

import ast
import gc
import threading
from pathlib import Path

import numpy as np
import pytest
from live_helpers import NAMES, TinyNet, tiny_explainer

from camvideo.engine import METHODS, Explainer
from camvideo.errors import ModelError
from camvideo.jobs import FrameAnnotator, LiveAnnotator
from camvideo.options import COLORMAP_NAMES, METHOD_CHOICES, METHOD_NAMES, canonical_method
from camvideo.render import COLORMAPS, Renderer, TemporalSmoother
from camvideo.sinks import Mp4Sink
from camvideo.types import Frame, FrameResult, VideoInfo

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("camvideo", "ui")
MAX_LINES = 430  # "about 400"


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _package_of(path: Path) -> str:
    """The package a module belongs to: camvideo.<sub> for a file in a subpackage, else its module."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:2]) if len(parts) > 2 else ".".join(parts)


def test_only_public_names_cross_packages() -> None:
    offenders = []
    for path in _modules():
        here = _package_of(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:  # relative: resolve against this module's package
                base = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith(PACKAGES):
                continue
            there = ".".join(target.split(".")[:2])
            if there == here or target == here:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    offenders.append(f"{path.relative_to(ROOT)}: from {target} import {alias.name}")
    assert offenders == []


def test_modules_stay_small() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_option_names_have_one_home() -> None:
    assert tuple(COLORMAPS) == COLORMAP_NAMES
    assert set(METHODS) <= set(METHOD_NAMES)
    # the front ends read the same tuples (the CLI's choices, the GUI's combo boxes)
    from camvideo.cli import build_parser

    parser = build_parser()
    annotate = next(a for a in parser._subparsers._group_actions[0].choices["annotate"]._actions if a.dest == "method")
    assert tuple(annotate.choices) == METHOD_CHOICES == ("auto", *METHOD_NAMES)


def test_value_types_load_no_model_code() -> None:
    import subprocess
    import sys

    code = "import camvideo.types, camvideo.sinks, sys; print('torch' in sys.modules, 'camvideo.engine' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["False", "False"]


# -- bug 1: smoothing with a method that runs under inference mode --------------------------------


@pytest.mark.parametrize("method", ["cam", "eigencam", "scorecam"])
def test_smoothing_survives_every_n_with_inference_mode_methods(method: str) -> None:
    """FrameAnnotator(every=3), batches of 5 frames then 1: the smoother's class EMA once
    became an inference tensor and the next in-place update raised RuntimeError."""
    explainer = tiny_explainer(method=method)
    annotator = FrameAnnotator(explainer, Renderer("jet", 0.5), TemporalSmoother(0.25), None, every=3)
    rng = np.random.default_rng(1)
    frames = [Frame(i, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), i, i / 30) for i in range(6)]
    first = annotator(frames[:5])
    second = annotator(frames[5:])
    assert len(first) == 5 and len(second) == 1
    assert annotator.smoother is not None and annotator.smoother.time == pytest.approx(5 / 30)
    # frames 0 and 3 ran the model, the others were drawn with the last run (every=3)
    assert [r.extra["model_frame"] for r in first + second] == [0, 0, 0, 3, 3, 3]
    explainer.close()


def test_smoothing_survives_live_every_change() -> None:
    """The live app's "model every 1 -> 2" switch: the same annotator first explains every
    frame, then every other one."""
    explainer = tiny_explainer(method="cam")
    annotator = LiveAnnotator(explainer, Renderer("jet", 0.5), TemporalSmoother(0.25), None, every=1)
    image = np.full((48, 64, 3), 120, np.uint8)
    annotator([Frame(0, image, 0, 0.0), Frame(1, image, 1, 1 / 30)])
    annotator.every = 2
    results = annotator([Frame(i, image, i, i / 30) for i in range(2, 6)])
    assert [r.extra["model_frame"] for r in results] == [2, 2, 4, 4]
    # ... and the live app's background path: the model in one thread, drawing in another
    frame = Frame(6, image, 6, 6 / 30)
    annotator.adopt(annotator.explain_frame(frame))
    drawn = annotator.render_held([frame, Frame(7, image, 7, 7 / 30)])
    assert [r.extra["model_frame"] for r in drawn] == [6, 6]
    explainer.close()


# -- bug 2: a writer aborted while another thread is inside write ----------------------------------


class _SlowSink(Mp4Sink):
    """An Mp4Sink whose encode stops half-way until told to go on."""

    inside = threading.Event()
    go_on = threading.Event()

    def _encode(self, image, pts, time) -> None:
        super()._encode(image, pts, time)
        type(self).inside.set()
        assert type(self).go_on.wait(30)
        self.container_open_at_end_of_write = self._out is not None


def test_abort_during_a_write_waits_for_the_write(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    info = VideoInfo(width=32, height=32, fps=25, time_base=__import__("fractions").Fraction(1, 25))
    sink = _SlowSink(target, info)
    _SlowSink.inside.clear()
    _SlowSink.go_on.clear()
    image = np.zeros((32, 32, 3), np.uint8)
    result = FrameResult(Frame(0, image, 0, 0.0), image, [0], [1.0], None, [])
    errors: list[BaseException] = []

    def write() -> None:
        try:
            sink.write(result)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    writer = threading.Thread(target=write)
    writer.start()
    assert _SlowSink.inside.wait(60)
    sink.abort()  # the pipeline gave up waiting: abort while the sink thread is mid-write
    partials = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert partials == []  # the temporary file is gone at once
    _SlowSink.go_on.set()
    writer.join(60)
    assert errors == []
    assert sink.container_open_at_end_of_write  # the container was not closed under the encoder
    assert sink._out is None  # ... and it was released when the write returned
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        sink.write(result)


# -- bug 3: method names are normalised in one place ---------------------------------------------


def test_method_names_are_read_the_same_everywhere() -> None:
    assert canonical_method("Grad-CAM") == "gradcam" and canonical_method("gradcam_pp") == "gradcam++"
    assert canonical_method("score cam") == "scorecam" and canonical_method("nope") is None
    with Explainer(TinyNet().eval(), method="grad-cam", device="cpu", class_names=NAMES, input_size=64) as ex:
        assert ex.method == "gradcam"
        ex.set_method("Grad-CAM++")
        assert ex.method == "gradcam++"
        with pytest.raises(ModelError, match="unknown method"):
            ex.set_method("gradcamx")
        assert ex.method == "gradcam++"
    with pytest.raises(ModelError, match="unknown method"):
        Explainer(TinyNet().eval(), method="gradcamx", device="cpu", class_names=NAMES, input_size=64)


# -- bug 4: hooks do not outlive the Explainer ------------------------------------------------------


def test_hook_is_removed_when_an_unclosed_explainer_is_collected() -> None:
    model = TinyNet().eval()
    explainer = Explainer(model, method="gradcam", device="cpu", class_names=NAMES, input_size=64)
    hooked = dict(model.named_modules())[explainer.target_layer]
    assert len(hooked._forward_hooks) == 1
    explainer.set_method("cam")  # a replaced method's hook goes at once, the new one stays
    assert len(hooked._forward_hooks) == 1
    del explainer
    gc.collect()
    assert len(hooked._forward_hooks) == 0


# -- no private names across modules, no import cycles (AST) --------------------------------------

# namedtuple's methods and fields start with an underscore but are its public API
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_field_defaults", "_make"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


MODULES = {_module_name(p): p for p in _modules()}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORE


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    here = _module_name(path).split(".")
    base = here if _is_package(path) else here[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _runtime_nodes(tree: ast.Module) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (no import at run time)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def _imports(path: Path) -> list[tuple[str, str | None, str]]:
    """``(module, name or None, local name)`` for every run-time import in ``path``, at any
    depth (imports inside functions too): ``import a.b as c`` -> ("a.b", None, "c"),
    ``from a import b as c`` -> ("a", "b", "c")."""
    out: list[tuple[str, str | None, str]] = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((alias.name, None, alias.asname or alias.name))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(path, node)
            out.extend((target, alias.name, alias.asname or alias.name) for alias in node.names)
    return out


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def private_access_across_modules() -> list[str]:
    """``from X import _name``, and ``m._name`` where ``m`` is a name this module imported
    from another camvideo/ui module (a module, class or function: ``from x import y;
    y._private``, ``import camvideo.x as m; m._private``)."""
    offenders = []
    for here, path in MODULES.items():
        imported: dict[str, str] = {}  # local name -> what it is, dotted ("camvideo.sinks.report")
        for module, name, local in _imports(path):
            if not module.startswith(PACKAGES) or module == here:
                continue
            if name is None:
                imported[local] = module if local != module else module.split(".")[0]
                continue
            if _private(name):
                offenders.append(f"{here}: from {module} import {name}")
            imported[local] = f"{module}.{name}"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not _private(node.attr):
                continue
            chain = _dotted(node.value)
            if chain is None:
                continue
            head, _, rest = chain.partition(".")
            if head not in imported:
                continue
            owner = f"{imported[head]}.{rest}" if rest else imported[head]
            if owner == here or owner.startswith(here + "."):
                continue
            offenders.append(f"{here}: {chain}.{node.attr} (line {node.lineno})")
    return sorted(set(offenders))


def import_graph() -> dict[str, set[str]]:
    """Module -> the camvideo/ui modules it imports at run time (``from pkg import name``
    is an import of ``pkg.name`` where that is a module, else of ``pkg``)."""
    graph: dict[str, set[str]] = {}
    for here, path in MODULES.items():
        edges = set()
        for module, name, _ in _imports(path):
            if name is not None and f"{module}.{name}" in MODULES:
                edges.add(f"{module}.{name}")
            elif module in MODULES:
                edges.add(module)
        edges.discard(here)
        graph[here] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a
    list of its modules, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_private_names_cross_modules() -> None:
    assert private_access_across_modules() == []


def test_no_import_cycles() -> None:
    assert import_cycles(import_graph()) == []
