"""What a new user meets first, through the real ``camvideo`` command on real files.

The default sample (the narrated cat clip) annotated with its sound and a report; the
``--min-score`` overlay read back from the decoded MP4; the output container following the
extension; bad inputs refused before torch is even imported; the help texts against the
lists they must show (``sources.STREAM_SCHEMES``, ``options.X264_PRESETS``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from camvideo.options import X264_PRESETS
from camvideo.sources import STREAM_SCHEMES, sample_video

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = sample_video()
CAT_NAMES = {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat", "lynx"}
CUP_NAMES = {"espresso", "cup", "coffee mug", "eggnog", "cappuccino"}
pytestmark = pytest.mark.timeout(600)


def camvideo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["camvideo", *args], cwd=cwd, capture_output=True, text=True, timeout=500, check=False)


def packets(path: Path, kind: str) -> list[tuple[float, bytes]]:
    with av.open(str(path)) as c:
        streams = c.streams.audio if kind == "audio" else c.streams.video
        if not streams:
            return []
        return [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(streams[0]) if p.size]


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("first")
    done = camvideo("annotate", "--jsonl", "d.jsonl", "--report", "-q", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder


def test_default_sample_is_the_narrated_cat_clip_with_its_sound(first_run: Path) -> None:
    assert SAMPLE.name == "cat_and_coffee_narrated.mp4"
    out = first_run / "cat_and_coffee_narrated.cam.mp4"
    assert sorted(p.name for p in first_run.iterdir()) == sorted(
        [out.name, "cat_and_coffee_narrated.cam.report.png", "d.jsonl"]
    )
    assert [t for t, _ in packets(out, "video")] and len(frames(out)) == 120
    source_audio = packets(SAMPLE, "audio")
    assert len(source_audio) > 150 and packets(out, "audio") == source_audio  # copied, byte for byte


def test_default_sample_figures(first_run: Path) -> None:
    """The model sees what is there: tight boxes, real confidences, the right classes."""
    records = [json.loads(line) for line in (first_run / "d.jsonl").read_text().splitlines()]
    area = [(r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]) / (640 * 360) for r in records if r["box"]]
    assert len(records) == 120 and len(area) == 120
    # the photos cover 51 % (cat, 421x280) and 55 % (cup, 435x290) of the 640x360 frame: the box is the photo
    assert statistics.median(area) < 0.6 and sum(a >= 0.9 for a in area) == 0
    assert statistics.median(r["score"] for r in records) >= 0.2
    first, second = records[:60], records[66:]  # the cut is at 2 s; smoothing lags a few frames
    assert sum(r["name"] in CAT_NAMES for r in first) >= 55
    assert sum(r["name"] in CUP_NAMES for r in second) >= 45


def test_report_beside_the_video_shows_its_parts(first_run: Path) -> None:
    image = cv2.cvtColor(cv2.imread(str(first_run / "cat_and_coffee_narrated.cam.report.png")), cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 500
    tab10 = [(31, 119, 180), (255, 127, 14), (214, 39, 40)]  # C0 (cat), C1 (espresso), C3 (heat y)
    for colour in tab10:
        assert (np.abs(image.astype(int) - colour).max(axis=-1) <= 25).sum() > 300, colour
    strip = cv2.cvtColor(np.ascontiguousarray(image[int(height * 0.8) :]), cv2.COLOR_RGB2HSV)  # the thumbnails
    warm = ((strip[..., 0] <= 15) | (strip[..., 0] >= 170)) & (strip[..., 1] >= 130) & (strip[..., 2] >= 130)
    assert warm.sum() > 500  # the heat's red on the cat and the cup


def test_min_score_greys_the_label_and_drops_the_box(tmp_path: Path) -> None:
    clip = sample_video("cat_and_coffee.mp4")
    for name, score in (("sure", "0"), ("unsure", "0.99")):
        done = camvideo("annotate", str(clip), "-o", f"{name}.mp4", "--jsonl", f"{name}.jsonl", "--min-score", score,
                        "--smooth", "0", "--crf", "10", "-q", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "sure.jsonl").read_text().splitlines()]
    sure, unsure = frames(tmp_path / "sure.mp4"), frames(tmp_path / "unsure.mp4")
    checked = 0
    for i in range(5, 120, 23):
        x0, y0, x1, y1 = records[i]["box"]
        assert records[i]["score"] < 0.99
        for image, drawn in ((sure[i], True), (unsure[i], False)):
            edge = image[(y0 + y1) // 2, x0 : x0 + 2].astype(int)  # the box's left edge, halfway down
            green = (edge[:, 1] > 200) & (edge[:, 0] < 90) & (edge[:, 2] < 90)
            assert green.any() == drawn, (i, drawn, edge)
            band = image[2:20, 2:200].astype(int)  # the label, top left
            white = ((band > 225).all(axis=-1)).sum()
            grey = ((np.abs(band - 150) < 25).all(axis=-1)).sum()
            # white text (with grey antialiased edges) when sure; grey text and no white when unsure
            assert (white > 20) if drawn else (white <= 2 and grey > 20), (i, drawn, white, grey)
        checked += 1
    assert checked == 5


def short_clip_with_audio(path: Path, seconds: float = 0.5) -> Path:
    """The first ``seconds`` of the default sample, video and audio packets copied."""
    with av.open(str(SAMPLE)) as src, av.open(str(path), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (src.streams.video[0], src.streams.audio[0])}
        for packet in src.demux(src.streams.video[0], src.streams.audio[0]):
            if packet.dts is None or packet.pts is None or float(packet.pts * packet.time_base) >= seconds:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return path


@pytest.mark.parametrize("ext, magic", [(".mp4", b"isom"), (".mov", b"qt  "), (".mkv", b"\x1a\x45\xdf\xa3")])
def test_output_container_follows_the_extension(tmp_path: Path, ext: str, magic: bytes) -> None:
    clip = short_clip_with_audio(tmp_path / "short.mp4")
    done = camvideo("annotate", str(clip), "-o", f"out{ext}", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    head = (tmp_path / f"out{ext}").read_bytes()[:64]
    assert (head[8:12] == magic) if ext != ".mkv" else head.startswith(magic)  # ftyp major brand / EBML
    with av.open(str(tmp_path / f"out{ext}")) as c:
        kinds = [(s.type, s.codec_context.name) for s in c.streams]
    assert kinds == [("video", "h264"), ("audio", "aac")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["short.mp4", f"out{ext}"])


def run_without_torch(args: list[str], cwd: Path) -> tuple[int, str, bool]:
    """``camvideo`` in a fresh interpreter; also whether torch was ever imported (the model loaded)."""
    code = ("import sys; from camvideo.cli import main; code = main(sys.argv[1:]); "
            "print('TORCH', 'torch' in sys.modules); sys.exit(code)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    return done.returncode, done.stderr.strip(), "TORCH True" in done.stdout


@pytest.mark.parametrize("flag", ["-o", "--jsonl", "--maps", "--report"])
def test_an_existing_output_is_refused_before_the_model_loads(tmp_path: Path, flag: str) -> None:
    name = {"-o": "taken.mp4", "--jsonl": "taken.jsonl", "--maps": "taken.npz", "--report": "taken.png"}[flag]
    (tmp_path / name).write_bytes(b"precious")
    args = ["annotate", str(SAMPLE), flag, name] + (["-o", "out.mp4"] if flag != "-o" else [])
    code, stderr, torch_loaded = run_without_torch(args, tmp_path)
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert stderr == f"camvideo: error: {name}: already exists (use --overwrite to replace it)"
    assert not torch_loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == [name] and (tmp_path / name).read_bytes() == b"precious"


def test_a_folder_run_still_reports_an_existing_output_and_goes_on(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    short_clip_with_audio(folder / "a.mp4")
    short_clip_with_audio(folder / "b.mp4")
    (out / "a.cam.mp4").write_bytes(b"precious")
    done = camvideo("annotate", str(folder), "-o", str(out), "-q", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "a.cam.mp4: already exists" in done.stderr and "1 of 2 videos failed" in done.stderr
    assert (out / "a.cam.mp4").read_bytes() == b"precious" and len(frames(out / "b.cam.mp4")) > 0


@pytest.mark.parametrize("what", ["text", "missing", "avi", "report_not_png"])
def test_bad_inputs_are_refused_before_the_model_loads(tmp_path: Path, what: str) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    args = {
        "text": ["annotate", "notes.txt"],
        "missing": ["annotate", "missing.mp4"],
        "avi": ["annotate", str(SAMPLE), "-o", "out.avi"],
        "report_not_png": ["annotate", str(SAMPLE), "-o", "out.mp4", "--report", "r.txt"],
    }[what]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stderr, torch_loaded = run_without_torch(args, tmp_path)
    assert code == 2 and len(stderr.splitlines()) == 1 and stderr.startswith("camvideo: error: "), stderr
    assert not torch_loaded
    if what == "avi":
        assert ".mp4, .mov, .mkv" in stderr
    if what == "report_not_png":
        assert "r.txt" in stderr and ".png" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_help_is_as_complete_as_the_readme(tmp_path: Path) -> None:
    live = camvideo("live", "--help", cwd=tmp_path).stdout
    flat = " ".join(live.split())
    for scheme in STREAM_SCHEMES:
        assert f"{scheme}://" in flat, scheme
    assert "`sample`" in flat and "/dev/video2" in flat and "av:0" in flat
    assert "--batch-size" not in live and "--jobs" not in live and "--crf" not in live
    assert "--every N|auto" in live and "--min-score" in live
    annotate = " ".join(camvideo("annotate", "--help", cwd=tmp_path).stdout.split())
    assert all(name in annotate for name in X264_PRESETS) and "--report" in annotate and ".mkv" in annotate
    models = camvideo("models", cwd=tmp_path).stdout.splitlines()
    assert models[0].split() == ["MODEL", "WEIGHTS", "NOTES"] and models[1].split()[:2] == [
        "efficientnet_lite0",
        "offline",
    ]
