"""Which H.264 encoder :class:`~camvideo.sinks.Mp4Sink` uses, and how it is set up.

Two encoders write the same kind of file (H.264, yuv420p, BT.709 tags, the source's
timestamps): ``libx264`` on the CPU, the reference, always there; and ``h264_nvenc``
on an NVIDIA GPU's video encoder, where the GPU has one (consumer and workstation
cards, L4/L40; not the H100/A100, which have NVDEC but no NVENC). Whether NVENC
works can only be learnt by opening it: the FFmpeg build, the driver's
``libnvidia-encode``, the GPU, the frame size and the session limit all decide, so
:func:`encoder_available` encodes one frame into memory and remembers the answer.

NVENC is a speed option, never a reason to fail: ``"auto"`` takes it where it works
(logged at INFO), an explicit ``"h264_nvenc"`` that does not work is a one-line
warning and libx264.
"""

from __future__ import annotations

import functools
import io
import logging

import av
import numpy as np

from ..options import ENCODER_NAMES, X264_PRESETS

__all__ = ["ENCODERS", "X264_PRESETS", "encoder_available", "choose_encoder", "configure"]

log = logging.getLogger(__name__)

#: Values of ``Mp4Sink(encoder=...)``.
ENCODERS = ENCODER_NAMES

# x264 presets -> NVENC's p1 (fastest) .. p7 (best), by the same speed/quality intent.
_NVENC_PRESETS = {
    "ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4",
    "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7",
}  # fmt: skip

# Why a probe said no, for the log line: (name, width, height) -> one-line reason.
_PROBE_ERRORS: dict[tuple[str, int, int], str] = {}


def configure(stream: av.VideoStream, encoder: str, *, crf: int, preset: str, threads: int) -> None:
    """Set ``encoder``'s quality, speed and threading options on an output ``stream``."""
    codec = stream.codec_context
    if encoder == "h264_nvenc":
        # Constant quality, the NVENC counterpart of x264's CRF: VBR with a target
        # quality and no bit rate cap. cq=0 means "automatic" to NVENC, so x264's
        # lossless crf 0 becomes cq 1, its best constant quality.
        codec.bit_rate = 0
        codec.options = {"preset": _NVENC_PRESETS[preset], "rc": "vbr", "cq": str(max(crf, 1))}
        return
    # PyAV creates contexts with slice threading only, and FFmpeg's libx264 wrapper
    # then switches x264 to --sliced-threads, which scales far worse on many cores
    # than x264's own frame threads (what the ffmpeg CLI gets).
    codec.thread_type = "FRAME"
    codec.thread_count = threads  # 0: x264 picks from the CPU count
    codec.options = {"crf": str(crf), "preset": preset}


@functools.lru_cache(maxsize=64)
def encoder_available(name: str, width: int, height: int) -> bool:
    """Whether encoder ``name`` can encode ``width`` x ``height`` yuv420p video here.

    Found out by encoding one black frame into an in-memory MP4, with the options
    :class:`~camvideo.sinks.Mp4Sink` uses; every error (an unknown encoder, no GPU or
    driver, EPERM at ``avcodec_open2``, a size out of the encoder's range) means no.
    Cached per process: each answer costs an encoder start-up (a CUDA context for NVENC).
    """
    width, height = width + width % 2, height + height % 2  # what Mp4Sink encodes
    try:
        with av.open(io.BytesIO(), mode="w", format="mp4") as probe:
            stream = probe.add_stream(name, rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            configure(stream, name, crf=23, preset="veryfast", threads=1)
            frame = av.VideoFrame.from_ndarray(np.zeros((height * 3 // 2, width), np.uint8), format="yuv420p")
            frame.pts = 0
            probe.mux(stream.encode(frame))
            probe.mux(stream.encode(None))
        return True
    except Exception as err:  # noqa: BLE001 - any failure means "not here"
        reason = " ".join((getattr(err, "strerror", None) or str(err) or type(err).__name__).split())
        _PROBE_ERRORS[(name, width, height)] = reason
        log.debug("encoder %s cannot encode %dx%d here (%s)", name, width, height, reason)
        return False


def choose_encoder(requested: str, width: int, height: int, *, what: object = "") -> str:
    """The encoder to use for ``requested`` (one of :data:`ENCODERS`) at this size.

    ``what`` (the output path) prefixes the log lines.
    """
    prefix = f"{what}: " if what else ""
    if requested == "libx264":
        return "libx264"
    if encoder_available("h264_nvenc", width, height):
        if requested == "auto":
            log.info("%sencoding with h264_nvenc (GPU)", prefix)
        return "h264_nvenc"
    reason = _PROBE_ERRORS.get(("h264_nvenc", width + width % 2, height + height % 2), "unknown reason")
    message = "%sh264_nvenc cannot encode %dx%d here (%s); encoding with libx264"
    # Asked for by name: worth a warning. "auto" only says what it picked.
    (log.info if requested == "auto" else log.warning)(message, prefix, width, height, reason)
    return "libx264"
