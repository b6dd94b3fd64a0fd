"""Coverage-guided fuzzing of decode → engine → encode with atheris (libFuzzer).

The CI fuzz run is ``tests/test_fuzz.py`` (hypothesis, bounded). This is the long run:
libFuzzer mutates the seeds below, guided by the branches it reaches in camvideo's own
Python code (the package is instrumented on import; FFmpeg itself is not, so its
internals are explored by mutation, not by coverage). Each input is annotated with the
real ``FileSource``, pipeline and ``Mp4Sink`` (a tiny model stands for the engine), and the
rules of ``tests/test_fuzz.py`` are checked: a decodable MP4 with every frame written, or
a one-line ``CamvideoError`` with nothing left behind. Anything else is a crash.

    pip install atheris
    python benchmarks/fuzz_atheris.py -max_total_time=3600 -timeout=60 fuzz-corpus/
    python benchmarks/fuzz_atheris.py -runs=2000                # a fixed number of inputs
    python benchmarks/fuzz_atheris.py crash-<sha1>              # replay one input

``CORPUS`` (default ``fuzz-corpus/``, created and seeded) keeps the inputs that reached
new code, so a later run goes on from there. libFuzzer writes any failing input to
``crash-*`` / ``timeout-*`` in the current folder; copy it into
``tests/fuzz_regressions/`` (any name ending in ``.mp4``) and ``tests/test_fuzz.py``
replays it on every CI run from then on. ``-timeout`` turns a hang into a failure.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

# Heavy libraries first, uninstrumented; then camvideo, instrumented.
import av  # noqa: E402
import numpy  # noqa: E402,F401
import torch  # noqa: E402

with atheris.instrument_imports(include=["camvideo"]):
    from camvideo.errors import CamvideoError
    from camvideo.jobs import AnnotateSettings, annotate_video
    from camvideo.pipeline import StageStalled
    from camvideo.render import Renderer

import corpus  # noqa: E402

torch.set_num_threads(1)
logging.disable(logging.WARNING)  # 'N frames could not be decoded' for most inputs
EXPLAINER = corpus.tiny_explainer()
RENDERER = Renderer(class_names=EXPLAINER.class_names)
SETTINGS = AnnotateSettings(smooth=0.0, batch_size=4, preset="ultrafast", stall_timeout=20.0)
WORK = Path(tempfile.mkdtemp(prefix="camvideo-fuzz-"))


def seeds() -> dict[str, bytes]:
    """The hypothesis seed, plus a few corpus clips in other containers and codecs."""
    out = {"seed.mp4": corpus.small_mp4(n=6, size=(32, 24), gop=3)}
    scratch = Path(tempfile.mkdtemp(prefix="camvideo-seeds-"))
    for name in ("first_frames_broken.avi", "variable_rate.mkv", "phone_rotated.mp4", "with_audio.mp4", "gray.mkv"):
        path = corpus.build(scratch, [corpus.BY_NAME[name]])[name]
        out[name] = path.read_bytes()
    return out


def test_one_input(data: bytes) -> None:
    try:
        check(data)
    except BaseException:
        # libFuzzer does not always get to write the input of a Python exception: keep it.
        import hashlib

        name = Path(f"crash-{hashlib.sha1(data).hexdigest()}.mp4")
        name.write_bytes(data)
        print(f"input saved as {name.absolute()}", file=sys.stderr)
        raise


def check(data: bytes) -> None:
    source, output = WORK / "input", WORK / "output.mp4"
    for path in WORK.iterdir():
        path.unlink()
    source.write_bytes(data)
    try:
        report = annotate_video(source, output, EXPLAINER, RENDERER, SETTINGS)
    except StageStalled:
        raise  # a 6-frame clip that makes no progress for 20 s: a hang
    except CamvideoError as err:
        if "\n" in str(err):
            raise AssertionError(f"message on several lines: {err!r}") from err
        left = sorted(p.name for p in WORK.iterdir())
        if left != ["input"]:
            raise AssertionError(f"left behind after an error: {left}") from err
        return
    written = report.stats.frames_written
    with av.open(str(output)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    if decoded != written or written == 0:
        raise AssertionError(f"{written} frames written, {decoded} decode")


def main() -> None:
    args = sys.argv[1:]
    dirs = [a for a in args if not a.startswith("-")]
    if not dirs:
        corpus_dir = Path("fuzz-corpus")
        args.append(str(corpus_dir))
    else:
        corpus_dir = Path(dirs[0])
    if corpus_dir.suffix == "" and not corpus_dir.is_file():
        corpus_dir.mkdir(parents=True, exist_ok=True)
        if not any(corpus_dir.iterdir()):
            for name, data in seeds().items():
                (corpus_dir / name).write_bytes(data)
    atheris.Setup([sys.argv[0], *args], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
