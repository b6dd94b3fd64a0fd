"""The ``camvideo`` argument parser: every command, option, choice and default.

Choices and defaults come from :mod:`camvideo.options`, so the help shows the same names as
the engine, the renderer and the desktop app use.
"""

from __future__ import annotations

import argparse

from .. import __version__
from .. import options as defaults
from ..options import COLORMAP_NAMES, ENCODER_NAMES, HWACCEL_NAMES, METHOD_CHOICES, PRECISIONS, X264_PRESETS

__all__ = ["build_parser"]


def _model_options(parser: argparse.ArgumentParser, batches: bool = True) -> None:
    """The model's options; ``batches``: the batch size too (annotate only: live explains one frame at a time)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=defaults.DEFAULT_MODEL, help="model name (see `camvideo models`): efficientnet_lite0/1/2, a torchvision classifier "
                       "(resnet50, vit_b_16, swin_t, ...) or timm:NAME [%(default)s]")  # fmt: skip
    group.add_argument(
        "--weights", metavar="PATH", help="local state dict for the model (loaded with weights_only=True)"
    )
    group.add_argument("--layer", metavar="NAME",
                       help="dotted name of the layer to explain [auto: the last spatial layer; on a ViT whose head "
                       "reads the class token, the last block's first norm (encoder.layers[-1].ln_1, timm "
                       "blocks[-1].norm1)]")  # fmt: skip
    group.add_argument("--method", default=defaults.DEFAULT_METHOD, type=_method, choices=METHOD_CHOICES,
                       help="CAM method; auto: cam where it is exact (a pooled head), else gradcam; "
                            "rollout: attention rollout, for ViTs [%(default)s]")  # fmt: skip
    group.add_argument("--target", default="top1", help="top1, topK, a class index or a class name [%(default)s]")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N [%(default)s]")
    group.add_argument("--precision", default="fp32", choices=PRECISIONS, help="model precision [%(default)s]")
    group.add_argument("--input-size", default=defaults.DEFAULT_INPUT_POLICY, choices=defaults.INPUT_POLICIES,
                       dest="input_policy", help="model input: short (short side 224, aspect kept: 224x398 for 720p), budget (224x224's "
                       "pixel count, aspect kept: 168x299, ~0.6x the forward's time, coarser maps) or square "
                       "(squashed to 224x224) [%(default)s]")  # fmt: skip
    group.add_argument("--backend", default=defaults.DEFAULT_BACKEND, choices=defaults.BACKEND_NAMES,
                       help="how the network runs: auto (a compiled runtime on the CPU where the method allows, "
                       "else torch), torch, openvino or onnxruntime [%(default)s]")  # fmt: skip
    if batches:
        group.add_argument(
            "--batch-size", type=_positive_int, metavar="N", help="frames per model call [2 on the CPU, 32 on CUDA]"
        )


def _render_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("overlay")
    group.add_argument(
        "--alpha", type=_unit_float, default=defaults.DEFAULT_ALPHA, help="heatmap opacity, 0..1 [%(default)s]"
    )
    group.add_argument("--colormap", default=defaults.DEFAULT_COLORMAP, choices=COLORMAP_NAMES, help="[%(default)s]")
    group.add_argument("--boxes", action=argparse.BooleanOptionalAction, default=True, help="draw the CAM box [on]")
    group.add_argument(
        "--labels", action=argparse.BooleanOptionalAction, default=True, help="draw class and score [on]"
    )
    group.add_argument(
        "--threshold",
        type=_unit_float,
        default=defaults.DEFAULT_THRESHOLD,
        help="box threshold, fraction of the map's max [%(default)s]",
    )
    group.add_argument("--min-score", type=_unit_float, default=defaults.DEFAULT_MIN_SCORE, metavar="P",
                       help="below this probability of the shown class the label is greyed (\"unsure:\") and no box "
                       "is drawn; 0 always draws [%(default)s]")  # fmt: skip
    group.add_argument("--smooth", type=_nonneg_float, default=defaults.DEFAULT_SMOOTH, metavar="SECONDS",
                       help="temporal smoothing time constant; 0 turns it off [%(default)s]")  # fmt: skip
    group.add_argument("--side-by-side", action="store_true", help="original | overlay, side by side")


def _ray_options(parser: argparse.ArgumentParser) -> None:
    """The ``annotate`` options of a cluster run (``camvideo.cli.ray`` runs it)."""
    group = parser.add_argument_group("cluster (Ray)")
    group.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="run on a Ray cluster. ADDRESS: none (the cluster RAY_ADDRESS names, else a new local "
                       "one on 127.0.0.1), local, auto (the cluster this machine joined with `ray start`), "
                       "ray://HOST:10001 (Ray Client) or HOST:6379 (the head's GCS)")  # fmt: skip
    group.add_argument("--ray-workers", type=_positive_int, metavar="N",
                       help="worker actors, each holding the model [one per GPU, else one per CPU]")  # fmt: skip
    group.add_argument("--ray-dashboard", action="store_true",
                       help="start Ray's dashboard (on 127.0.0.1) with the local cluster [off]")  # fmt: skip
    group.add_argument("--segment-seconds", type=_nonneg_float, default=120.0, metavar="S",
                       help="with --ray, cut videos longer than S seconds at keyframes and annotate the pieces "
                       "in parallel; 0: never [%(default)s]")  # fmt: skip
    group.add_argument("--manifest", metavar="PATH.jsonl",
                       help="with --ray, append one line per video: input, output, frames, fps, worker node, "
                       "decoder, encoder, attempts, error")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camvideo",
        description="Class activation maps over video: see where an image classifier (a CNN, ViT or Swin) "
        "looks, live or in recorded clips.",
        epilog="Run `camvideo COMMAND --help` for a command's options. CAMVIDEO_DEBUG=1 shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"camvideo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    annotate = commands.add_parser(
        "annotate",
        help="write annotated MP4s from video files or folders",
        description="Annotate videos with heatmap, box and label on every frame; sound and timing are kept. "
        "With no INPUT, annotates the bundled sample video.",
    )
    annotate.add_argument("inputs", nargs="*", metavar="INPUT", help="video files or folders of videos")
    annotate.add_argument("-o", "--output", metavar="OUTPUT",
                          help="FILE.mp4 (or .mov, .mkv: the container follows the extension) for one input, a folder "
                          "for several [NAME.cam.mp4 in the current folder]")  # fmt: skip
    _model_options(annotate)
    _render_options(annotate)
    out = annotate.add_argument_group("output")
    out.add_argument("--jsonl", metavar="PATH", help="per-frame records (a folder when there are several inputs)")
    out.add_argument("--maps", metavar="PATH.npz", help="raw maps, float16 (a folder when there are several inputs)")
    out.add_argument("--no-video", action="store_true",
                     help="write no annotated video, only the records (--jsonl and/or --maps): decode + model "
                     "speed, for analysing hours of video")  # fmt: skip
    out.add_argument("--report", nargs="?", const=True, metavar="PATH.png",
                     help="one PNG per video: the top classes' probabilities over time, where the heat is (its "
                     "centre, x and y) and thumbnails of the overlay; alone: NAME.cam.report.png beside each video "
                     "(needs matplotlib: pip install matplotlib)")  # fmt: skip
    out.add_argument(
        "--crf", type=int, default=defaults.DEFAULT_CRF, help="x264 quality, 0 (lossless) .. 51 [%(default)s]"
    )
    out.add_argument("--preset", default=defaults.DEFAULT_PRESET, choices=X264_PRESETS, metavar="PRESET",
                     help=f"x264 speed preset, one of {', '.join(X264_PRESETS)} (NVENC: p1..p7) [%(default)s]")  # fmt: skip
    speed = annotate.add_argument_group("speed")
    speed.add_argument("--jobs", type=_jobs, default="auto", metavar="N",
                       help="videos annotated at once, sharing the model [auto: 1 on the CPU, up to 4 on CUDA]")  # fmt: skip
    speed.add_argument("--hwaccel", default="auto", choices=HWACCEL_NAMES,
                       help="hardware video decoding, falls back to the CPU when unavailable [auto: cuda with --device cuda]")  # fmt: skip
    speed.add_argument("--encoder", default="auto", choices=ENCODER_NAMES,
                       help="H.264 encoder; h264_nvenc falls back to libx264 where the GPU has none "
                       "[auto: h264_nvenc when it works and the model runs on CUDA, else libx264]")  # fmt: skip
    speed.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile (one shape per video; slow first batch)",
    )
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    out.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    _ray_options(annotate)

    live = commands.add_parser(
        "live",
        help="open the desktop app on a camera, stream or file",
        description="Live heatmaps in a window. SOURCE: a camera index (0, 1, ...) or device path (/dev/video2; "
        "av:0 or av:/dev/video0 reads it with PyAV), a stream URL (rtsp://, rtsps://, rtmp://, rtmps://, http://, "
        "https://, udp://, tcp://, rtp://, srt://), a video file (played at its own rate), or `sample` (the bundled "
        "sample clip, looped). With no SOURCE: the first camera, else the sample. Keys: Space pause, . or Right one "
        "frame, R record, S snapshot, F full screen, Q or Esc quit.",
        epilog="Without a display: QT_QPA_PLATFORM=offscreen camvideo live sample --duration 5 --snapshot last.png",
    )
    live.add_argument("source", nargs="?", metavar="SOURCE",
                      help="camera index or device, stream URL, video file or `sample` [first camera, else the sample]")  # fmt: skip
    _model_options(live, batches=False)
    _render_options(live)
    live.add_argument("--every", type=_every, default=0, metavar="N|auto",
                      help="run the model on every Nth frame (the frames between are drawn at once with the last map); "
                      "auto: every frame when the model and the drawing take at most 80%% of a frame interval, else the "
                      "model in the background on every Nth frame, N from its measured time, so the display keeps "
                      "the camera's rate "
                      "[auto]")  # fmt: skip
    live.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True, help="loop a file source [on]")
    live.add_argument("--duration", type=_nonneg_float, metavar="SECONDS", help="quit after that long")
    live.add_argument("--snapshot", metavar="PATH", help="save the last displayed frame (PNG) on exit")
    live.add_argument("--record", metavar="PATH", help="record the overlay to an MP4 from the start")

    serve = commands.add_parser(
        "serve",
        help="live heatmaps in a web browser (for a machine without a display)",
        description="Serve the live view as a web page: the same SOURCE as `live`, or `browser` (the viewer's own "
        "camera). Open the printed URL; from another machine: ssh -L 8000:localhost:8000 HOST, then "
        "http://localhost:8000/. Any --host beyond this machine needs the token printed in the URL.",
    )
    serve.add_argument("source", nargs="?", metavar="SOURCE",
                       help="camera index or device, stream URL, video file, `sample` or `browser` [first camera, else the sample]")  # fmt: skip
    _model_options(serve, batches=False)
    _render_options(serve)
    serve.add_argument("--every", type=_every, default=0, metavar="N|auto", help="model every Nth frame, as in `live` [auto]")  # fmt: skip
    serve.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True, help="loop a file source [on]")
    serve.add_argument("--port", type=int, default=8000, help="[%(default)s]")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on; beyond loopback a token is required [%(default)s]")  # fmt: skip
    serve.add_argument("--token", help="the token every request must carry [none on 127.0.0.1; generated for any other --host]")  # fmt: skip
    serve.add_argument("--jpeg-quality", type=int, default=80, metavar="Q", help="frames' JPEG quality, 10..100 [%(default)s]")  # fmt: skip
    serve.add_argument("--output-folder", default=".", metavar="DIR", help="where recordings are saved (and offered for download) [.]")  # fmt: skip

    commands.add_parser("models", help="list the models and which are available offline",
                        description="List the models camvideo knows by name and whether each loads offline.")  # fmt: skip
    cache = commands.add_parser("cache", help="list or clear the compiled models (ONNX Runtime, OpenVINO)",
                                description="List the compiled-model cache: one line per model, input size and "
                                "backend (compiled once, reused at the next start). The folder: $CAMVIDEO_CACHE_DIR, "
                                "else $XDG_CACHE_HOME/camvideo/compiled, else ~/.cache/camvideo/compiled.")  # fmt: skip
    cache.add_argument("--clear", action="store_true", help="remove every entry and say how much was freed")
    return parser


def _every(text: str) -> int:
    """``auto`` (0) or a positive number."""
    return 0 if text.strip().lower() == "auto" else _positive_int(text)


def _jobs(text: str) -> int:
    """``auto`` (0, decided once the device is known) or a positive number."""
    return 0 if text == "auto" else _positive_int(text)


def _method(text: str) -> str:
    """A method name as typed ("Grad-CAM", "gradcam_pp") -> its canonical name; argparse's
    choices then refuse what is unknown."""
    from ..options import canonical_method

    return canonical_method(text) or text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _unit_float(text: str) -> float:
    value = _nonneg_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text}")
    return value
