"""`camvideo annotate` end to end on real files, decoded back with PyAV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo import Explainer
from camvideo.cli import main
from camvideo.sources import FileSource, sample_video

BUNNY = sample_video("big_buck_bunny.mp4")
CATS = sample_video("cat_and_coffee.mp4")


def video_pts(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.fixture(scope="module")
def bunny_run(tmp_path_factory):
    """`camvideo annotate big_buck_bunny.mp4` in an empty folder (real footage with audio).

    The first command with no input annotates the default sample: tests/test_first_run.py."""
    folder = tmp_path_factory.mktemp("bunny")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        code = main(["annotate", str(BUNNY), "--quiet", "--smooth", "0", "--jsonl", "b.jsonl", "--maps", "b.npz"])
    finally:
        os.chdir(cwd)
    return code, folder


def test_default_run_writes_sample_with_timing_and_audio(bunny_run) -> None:
    code, folder = bunny_run
    out = folder / "big_buck_bunny.cam.mp4"
    assert code == 0 and out.is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["b.jsonl", "b.npz", "big_buck_bunny.cam.mp4"]  # no temp left
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_context.width, v.codec_context.height) == ("h264", 1280, 720)
        assert v.codec_context.pix_fmt == "yuv420p"
    assert video_pts(out) == pytest.approx(video_pts(BUNNY), abs=1e-9)
    assert len(video_pts(out)) == 132
    assert audio_packets(out) == audio_packets(BUNNY)  # remuxed: identical bytes and timestamps


def test_jsonl_and_maps_match_the_engine(bunny_run) -> None:
    _, folder = bunny_run
    records = [json.loads(line) for line in (folder / "b.jsonl").read_text().splitlines()]
    npz = np.load(folder / "b.npz")
    assert len(records) == 132 and npz["maps"].shape[0] == 132
    assert [r["frame"] for r in records] == list(range(132))
    assert [r["time"] for r in records] == pytest.approx(video_pts(BUNNY), abs=1e-6)
    np.testing.assert_allclose(npz["time"], video_pts(BUNNY), atol=1e-9)
    with FileSource(BUNNY) as src:
        sample = [f.image for i, f in zip(range(24), src) if i % 3 == 0]
    with Explainer() as ex:
        out = ex.explain(np.stack(sample))
        names = ex.class_names
    idx = list(range(0, 24, 3))
    assert [records[i]["class"] for i in idx] == out.classes.tolist()
    assert [records[i]["name"] for i in idx] == [names[c] for c in out.classes.tolist()]
    np.testing.assert_allclose([records[i]["score"] for i in idx], out.scores.numpy(), rtol=1e-3)
    np.testing.assert_array_equal(npz["classes"][idx], out.classes.numpy())
    assert npz["maps"].dtype == np.float16 and npz["maps"].shape[1:] == tuple(out.maps.shape[1:])
    np.testing.assert_allclose(
        npz["maps"][idx].astype(np.float32), out.maps.numpy(), rtol=2e-3, atol=2e-3 * float(out.maps.abs().max())
    )
    top = records[0]["top5"]
    assert len(top) == 5 and top[0]["class"] == records[0]["class"] and top[0]["score"] >= top[-1]["score"]
    for r in records:
        if r["box"] is not None:
            x0, y0, x1, y1 = r["box"]
            assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720


def test_heat_is_where_the_box_says(tmp_path: Path) -> None:
    """On the cat clip, the annotated frame is red-hot inside the CAM box and cold far from it."""
    out = tmp_path / "cats.mp4"
    jsonl = tmp_path / "cats.jsonl"
    assert main(["annotate", str(CATS), "-o", str(out), "--jsonl", str(jsonl), "--no-labels", "--no-boxes",
                 "--smooth", "0", "--crf", "12", "--quiet"]) == 0  # fmt: skip
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 120
    cat_frames = [r for r in records[:60] if r["name"] in ("Egyptian cat", "tabby", "tiger cat")]
    assert len(cat_frames) >= 50
    with av.open(str(out)) as c_out, av.open(str(CATS)) as c_in:
        pairs = list(zip(c_in.decode(video=0), c_out.decode(video=0)))
    assert len(pairs) == 120
    checked = 0
    for r in cat_frames[::10]:
        src = pairs[r["frame"]][0].to_ndarray(format="rgb24").astype(float)
        dst = pairs[r["frame"]][1].to_ndarray(format="rgb24").astype(float)
        heat = 2 * dst - src  # out = 0.5 heat + 0.5 frame
        x0, y0, x1, y1 = r["box"]
        hot = (heat[..., 0] - heat[..., 2]) > 100  # JET's red end: far more red than blue
        assert hot.sum() > 500, r["frame"]
        inside = np.zeros_like(hot)
        inside[y0:y1, x0:x1] = True
        assert hot[inside].sum() / hot.sum() > 0.97, r["frame"]  # the heat lies in the box
        far = np.ones_like(hot)
        far[max(0, y0 - 20) : y1 + 20, max(0, x0 - 20) : x1 + 20] = False
        assert far.any()
        outside = heat[far].mean(0)
        assert outside[2] > outside[0] + 40, (r["frame"], outside)  # cold: blue over red
        checked += 1
    assert checked >= 5


def test_side_by_side_doubles_width_and_keeps_original(tmp_path: Path) -> None:
    out = tmp_path / "sbs.mp4"
    assert main(["annotate", str(CATS), "-o", str(out), "--side-by-side", "--no-labels", "--quiet", "--crf", "10"]) == 0
    with av.open(str(out)) as c_out, av.open(str(CATS)) as c_in:
        a = next(c_out.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        b = next(c_in.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert a.shape == (360, 1280, 3)
    assert np.abs(a[:, :640] - b).mean() < 3  # left: the original (up to compression)
    assert np.abs(a[:, 640:] - b).mean() > 20  # right: the overlay


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "camvideo.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("camvideo: error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_bad_inputs_and_outputs_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("not a video")
    existing = tmp_path / "taken.mp4"
    existing.write_bytes(b"precious")
    assert "no such file" in one_line_error(run_cli("annotate", "missing.mp4", cwd=tmp_path))
    one_line_error(run_cli("annotate", "notes.mp4", cwd=tmp_path))
    msg = one_line_error(run_cli("annotate", str(CATS), "-o", str(existing), cwd=tmp_path))
    assert "--overwrite" in msg and existing.read_bytes() == b"precious"
    msg = one_line_error(run_cli("annotate", str(CATS), "-o", str(tmp_path / "nope" / "x.mp4"), cwd=tmp_path))
    assert "does not exist" in msg
    copy = tmp_path / "same.mp4"
    copy.write_bytes(CATS.read_bytes())
    msg = one_line_error(run_cli("annotate", str(copy), "-o", str(copy), "--overwrite", cwd=tmp_path))
    assert copy.read_bytes() == CATS.read_bytes()
    msg = one_line_error(run_cli("annotate", str(CATS), "--target", "no such class", cwd=tmp_path))
    assert "no class named" in msg
    msg = one_line_error(run_cli("annotate", str(CATS), "--layer", "hed", cwd=tmp_path))
    assert "head" in msg  # the closest real name is suggested
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4", "same.mp4", "taken.mp4"]


def test_folder_run_does_good_files_and_summarises_bad(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.mp4").write_bytes(CATS.read_bytes())
    (folder / "broken.mp4").write_bytes(os.urandom(5000))
    out = tmp_path / "out"
    proc = run_cli("annotate", str(folder), "-o", str(out), "--quiet", cwd=tmp_path, timeout=300)
    assert proc.returncode == 1
    assert "broken.mp4" in proc.stderr and "1 of 2 videos failed" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4"] or sorted(p.name for p in out.iterdir()) == [
        "good.cam.mp4"
    ]
    assert len(video_pts(next(out.iterdir()))) == 120


@pytest.mark.timeout(420)
def test_ctrl_c_finishes_the_file_with_frames_done(tmp_path: Path) -> None:
    # a long input: the cat clip looped 12 times with continuing timestamps
    long = tmp_path / "long.mp4"
    with av.open(str(CATS)) as src, av.open(str(long), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        images = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
        for i in range(12 * len(images)):
            frame = av.VideoFrame.from_ndarray(images[i % len(images)], format="rgb24")
            frame.pts = i
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    out = tmp_path / "long.cam.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "camvideo.cli", "annotate", str(long), "--quiet", "--batch-size", "2"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:  # wait until the encoder has written something
        partial = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
        if partial and partial[0].stat().st_size > 20_000:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    n = len(video_pts(out))
    assert 0 < n < 1440
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def short_clips(folder: Path, count: int, frames: int = 16) -> list[Path]:
    """``count`` different short clips cut from the cat sample, downscaled (fast to annotate)."""
    import cv2

    from camvideo.sinks import Mp4Sink

    folder.mkdir()
    with FileSource(CATS) as source:
        images = [
            cv2.resize(f.image, (192, 128), interpolation=cv2.INTER_AREA) for _, f in zip(range(count * frames), source)
        ]
        info = source.info
    paths = []
    for k in range(count):
        path = folder / f"clip{k}.mp4"
        with Mp4Sink(path, info) as sink:
            for i in range(frames):
                sink.encode(images[k * frames + i], i * 512, i / 25)
        paths.append(path)
    return paths


@pytest.mark.timeout(300)
def test_jobs_annotate_a_folder_at_once_with_the_same_results(tmp_path: Path, capsys) -> None:
    short_clips(tmp_path / "in", 3)
    outs = {}
    for jobs in ("1", "3"):
        out = tmp_path / f"out{jobs}"
        code = main(["annotate", str(tmp_path / "in"), "-o", str(out), "--jsonl", str(out), "--jobs", jobs,
                     "--batch-size", "4", "--quiet"])  # fmt: skip
        assert code == 0
        outs[jobs] = out
    assert sorted(p.name for p in outs["3"].iterdir()) == sorted(p.name for p in outs["1"].iterdir()) == [
        "clip0.cam.mp4", "clip0.jsonl", "clip1.cam.mp4", "clip1.jsonl", "clip2.cam.mp4", "clip2.jsonl"]  # fmt: skip
    for k in range(3):
        one = [json.loads(line) for line in (outs["1"] / f"clip{k}.jsonl").read_text().splitlines()]
        three = [json.loads(line) for line in (outs["3"] / f"clip{k}.jsonl").read_text().splitlines()]
        assert len(one) == 16 and [r["frame"] for r in three] == list(range(16))
        for a, b in zip(one, three):  # each video got its own frames' answers, in order
            assert (a["class"], a["box"]) == (b["class"], b["box"])
            assert a["score"] == pytest.approx(b["score"], rel=1e-5)
        assert video_pts(outs["3"] / f"clip{k}.cam.mp4") == video_pts(outs["1"] / f"clip{k}.cam.mp4")
    # The clips' answers differ, so a video given another's results would have been caught.
    boxes = [
        [json.loads(line)["box"] for line in (outs["1"] / f"clip{k}.jsonl").read_text().splitlines()] for k in range(3)
    ]
    assert boxes[0] != boxes[1] != boxes[2] != boxes[0]


def _records_of(folder: Path, stem: str) -> tuple[bytes, dict[str, np.ndarray]]:
    with np.load(folder / f"{stem}.npz") as npz:
        return (folder / f"{stem}.jsonl").read_bytes(), {k: npz[k] for k in npz.files}


def _assert_same_records(a: tuple[bytes, dict], b: tuple[bytes, dict]) -> None:
    assert a[0] == b[0]  # the JSONL records, byte for byte: classes, scores, top-5, boxes, times
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        np.testing.assert_array_equal(a[1][key], b[1][key])


def test_no_video_writes_the_records_of_a_normal_run_and_no_video(bunny_run, tmp_path: Path) -> None:
    """Issue 11: `annotate --no-video` skips the overlay and the encoder, and its records are
    those of a normal run: the 720p bunny (smoothing off, as the module's run) and the cat
    clip with the default smoothing (its bounds path), each against a normal run."""
    code, folder = bunny_run
    assert code == 0
    out = tmp_path / "bunny"
    out.mkdir()
    assert main(["annotate", str(BUNNY), "--quiet", "--smooth", "0", "--no-video", "--jsonl", str(out / "b.jsonl"),
                 "--maps", str(out / "b.npz")]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["b.jsonl", "b.npz"]
    _assert_same_records(_records_of(out, "b"), _records_of(folder, "b"))
    assert any(json.loads(line)["box"] for line in (out / "b.jsonl").read_text().splitlines())

    for name, extra in (("video", ["-o", str(tmp_path / "c.mp4")]), ("none", ["--no-video"])):
        (tmp_path / name).mkdir()
        assert main(["annotate", str(CATS), "--quiet", "--jsonl", str(tmp_path / name / "c.jsonl"),
                     "--maps", str(tmp_path / name / "c.npz"), *extra]) == 0  # fmt: skip
    _assert_same_records(_records_of(tmp_path / "none", "c"), _records_of(tmp_path / "video", "c"))
    assert (tmp_path / "c.mp4").is_file() and not list((tmp_path / "none").glob("*.mp4"))


def test_no_video_without_records_or_with_a_video_path_is_a_usage_error(tmp_path: Path) -> None:
    assert "--jsonl" in one_line_error(run_cli("annotate", str(CATS), "--no-video", cwd=tmp_path))
    msg = one_line_error(
        run_cli("annotate", str(CATS), "--no-video", "--jsonl", "a.jsonl", "-o", "a.mp4", cwd=tmp_path)
    )
    assert "-o" in msg
    assert run_cli("annotate", str(CATS), "--no-video", cwd=tmp_path).returncode == 2
    assert list(tmp_path.iterdir()) == []
