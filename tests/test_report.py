"""The video report (one PNG per video): its numbers against float64 references, and its
picture checked for the drawn elements."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from camvideo.errors import CamvideoError
from camvideo.sinks.report import ReportWriter, heat_centre, report_path
from camvideo.types import Frame, FrameResult

# matplotlib's default colour cycle (tab10), as the report draws its lines
TAB10 = {"C0": (31, 119, 180), "C1": (255, 127, 14), "C2": (44, 160, 44), "C3": (214, 39, 40), "C4": (148, 103, 189)}
NAMES = [f"class {i}" for i in range(1000)]
W, H, FPS, N = 320, 180, 30.0, 90


def reference_centre(m: np.ndarray) -> tuple[float, float]:
    """Centre of mass of the min-max normalised map, by a plain float64 double loop."""
    m = np.asarray(m, np.float64)
    lo, hi = m.min(), m.max()
    sx = sy = total = 0.0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = (m[i, j] - lo) / (hi - lo)
            sx += v * (j + 0.5) / m.shape[1]
            sy += v * (i + 0.5) / m.shape[0]
            total += v
    return sx / total, sy / total


def test_heat_centre_matches_float64_reference() -> None:
    rng = np.random.default_rng(3)
    for shape in [(7, 13), (7, 7), (1, 5), (14, 25)]:
        m = rng.normal(size=shape).astype(np.float32)
        assert heat_centre(m) == pytest.approx(reference_centre(m), abs=1e-9)
    hot = np.zeros((7, 13), np.float32)
    hot[2, 10] = 5.0
    assert heat_centre(hot) == pytest.approx(((10 + 0.5) / 13, (2 + 0.5) / 7), abs=1e-12)
    assert heat_centre(np.stack([hot, -hot])) == pytest.approx(heat_centre(hot))  # first target's map
    assert all(np.isnan(v) for v in heat_centre(np.ones((7, 13))))  # flat: nowhere in particular


def synthetic_results() -> list[FrameResult]:
    """A red bar moving left to right; the map's hot cell follows it; class 7 rises, class 3 falls."""
    results = []
    for i in range(N):
        image = np.full((H, W, 3), 40, np.uint8)
        x = int(i / (N - 1) * (W - 30))
        image[:, x : x + 30] = (250, 20, 20)
        image[: H // 2, :, 2] = 200  # a blue top half, so each thumbnail differs in two ways
        m = np.zeros((7, 13), np.float32)
        m[5, round(i / (N - 1) * 12)] = 1.0
        rising = 0.1 + 0.8 * i / (N - 1)
        top5 = sorted([(7, rising), (3, 0.9 - rising), (1, 0.03), (2, 0.02), (4, 0.01)], key=lambda v: -v[1])
        results.append(
            FrameResult(Frame(i, image, i, i / FPS), image, [top5[0][0]], [top5[0][1]], None, top5, raw_map=m)
        )
    return results


def colour_mask(image: np.ndarray, rgb: tuple[int, int, int], tol: int = 30) -> np.ndarray:
    return np.abs(image.astype(np.int16) - np.array(rgb, np.int16)).max(axis=-1) <= tol


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    results = synthetic_results()
    with ReportWriter(folder / "clip.cam.report.png", NAMES, title="clip", thumbnails=5) as writer:
        for r in results:
            writer.write(r)
    image = cv2.cvtColor(cv2.imread(str(writer.path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return writer, image, results, folder


def test_report_is_one_png_and_no_temporary_file(drawn) -> None:
    writer, image, _, folder = drawn
    assert [p.name for p in folder.iterdir()] == ["clip.cam.report.png"]
    assert writer.frames_written == N and image.ndim == 3 and image.shape[1] >= 1000
    assert report_path(folder / "clip.cam.mp4") == folder / "clip.cam.report.png"


def test_timeline_draws_the_top_classes(drawn) -> None:
    writer, image, _, _ = drawn
    x0, y0, x1, y1 = writer.panels["timeline"]
    panel = image[y0:y1, x0:x1]
    # the two classes that matter first (by mean probability), then the three small ones
    assert [c for c, _ in writer.top_classes()] == [7, 3, 1, 2, 4]
    for name in ("C0", "C1", "C2", "C3", "C4"):
        assert colour_mask(panel, TAB10[name]).sum() > 50, name
    # class 7 (C0) rises from 0.1 to 0.9: its line is low on the left and high on the right
    rows, cols = np.nonzero(colour_mask(panel, TAB10["C0"], tol=20))
    left, right = rows[cols < panel.shape[1] * 0.1].mean(), rows[cols > panel.shape[1] * 0.9].mean()
    height = panel.shape[0]
    assert left / height == pytest.approx(1 - 0.1, abs=0.08) and right / height == pytest.approx(1 - 0.9, abs=0.08)


def test_heat_strip_follows_the_hot_cell(drawn) -> None:
    writer, image, results, _ = drawn
    x0, y0, x1, y1 = writer.panels["heat"]
    panel = image[y0:y1, x0:x1]
    height = panel.shape[0]
    rows, cols = np.nonzero(colour_mask(panel, TAB10["C0"], tol=20))  # x: from the first column to the last
    expect_left = heat_centre(results[0].raw_map)[0]
    expect_right = heat_centre(results[-1].raw_map)[0]
    assert expect_left == pytest.approx(0.5 / 13) and expect_right == pytest.approx(12.5 / 13)
    assert 1 - rows[cols < panel.shape[1] * 0.03].mean() / height == pytest.approx(expect_left, abs=0.06)
    assert 1 - rows[cols > panel.shape[1] * 0.97].mean() / height == pytest.approx(expect_right, abs=0.06)
    rows, _ = np.nonzero(colour_mask(panel, TAB10["C3"], tol=20))  # y: always row 5 of 7
    assert 1 - np.median(rows) / height == pytest.approx(5.5 / 7, abs=0.06)


def test_thumbnails_are_the_overlay_at_regular_times(drawn) -> None:
    writer, image, results, _ = drawn
    times = writer.thumbnail_times
    assert len(times) == 5
    duration = results[-1].frame.time
    for k, t in enumerate(times):  # the frame nearest the middle of each fifth, within the 0.25 s grid
        assert abs(t - (k + 0.5) * duration / 5) <= 0.25
    by_time = {r.frame.time: r.image for r in results}
    for k, t in enumerate(times):
        x0, y0, x1, y1 = writer.panels[f"thumb{k}"]
        drawn_thumb = image[y0:y1, x0:x1].astype(np.float64)
        reference = cv2.resize(by_time[t], (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(np.float64)
        assert np.abs(drawn_thumb - reference).mean() < 12, (k, t)
        others = [u for u in by_time if abs(u - t) > 0.5]
        wrong = cv2.resize(by_time[others[0]], (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(np.float64)
        assert np.abs(drawn_thumb - wrong).mean() > 2 * np.abs(drawn_thumb - reference).mean()


def test_a_one_frame_video_draws_its_points(tmp_path) -> None:
    """One frame: a line through a single point draws nothing; the report marks it."""
    result = synthetic_results()[0]  # class 3 at 0.8 (C0), class 7 at 0.1 (C1); heat at (0.5/13, 5.5/7)
    with ReportWriter(tmp_path / "one.cam.report.png", NAMES, title="one") as writer:
        writer.write(result)
    image = cv2.cvtColor(cv2.imread(str(writer.path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert [c for c, _ in writer.top_classes()][:2] == [3, 7]
    x0, y0, x1, y1 = writer.panels["timeline"]
    panel = image[y0:y1, x0:x1]
    top = 0.9  # the axis: the peak 0.8 plus 10 %, rounded up to 0.05
    for name, probability in (("C0", 0.8), ("C1", 0.1)):
        rows, _ = np.nonzero(colour_mask(panel, TAB10[name], tol=20))
        assert len(rows) > 15, name  # a marker, not an invisible zero-length line
        assert 1 - rows.mean() / panel.shape[0] == pytest.approx(probability / top, abs=0.05), name
    x0, y0, x1, y1 = writer.panels["heat"]
    panel = image[y0:y1, x0:x1]
    for name, centre in (("C0", 0.5 / 13), ("C3", 5.5 / 7)):
        rows, _ = np.nonzero(colour_mask(panel, TAB10[name], tol=20))
        assert len(rows) > 15, name
        assert 1 - rows.mean() / panel.shape[0] == pytest.approx(centre, abs=0.05), name


def test_abort_leaves_nothing(tmp_path) -> None:
    writer = ReportWriter(tmp_path / "x.report.png", NAMES)
    writer.write(synthetic_results()[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(CamvideoError, match=r"pip install matplotlib") as err:
        ReportWriter(tmp_path / "x.report.png", NAMES)
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


def low_probability_results(peak: float) -> list[FrameResult]:
    """A clip whose best class rises from 0.01 to ``peak``, the others far below."""
    results = []
    for i in range(40):
        image = np.full((H, W, 3), 40, np.uint8)
        rising = 0.01 + (peak - 0.01) * i / 39
        top5 = [(7, rising), (3, 0.004), (1, 0.003), (2, 0.002), (4, 0.001)]
        m = np.zeros((7, 13), np.float32)
        m[3, 6] = 1.0
        results.append(FrameResult(Frame(i, image, i, i / FPS), image, [7], [rising], None, top5, raw_map=m))
    return results


@pytest.mark.parametrize(("peak", "top"), [(0.08, 0.1), (0.03, 0.1), (0.3, 0.35), (0.95, 1.0)])
def test_probability_axis_scales_to_the_data(tmp_path, peak: float, top: float) -> None:
    """Every probability under 10 %: the axis ends at 0.1, not 1, so the line is not flat.
    ``top``: the peak plus 10 % headroom rounded up to 0.05, never under 0.1 nor over 1."""
    with ReportWriter(tmp_path / "low.cam.report.png", NAMES, title="low") as writer:
        for r in low_probability_results(peak):
            writer.write(r)
    assert writer.probability_top == pytest.approx(top)
    image = cv2.cvtColor(cv2.imread(str(writer.path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    x0, y0, x1, y1 = writer.panels["timeline"]
    panel = image[y0:y1, x0:x1]
    rows, cols = np.nonzero(colour_mask(panel, TAB10["C0"], tol=20))
    height = panel.shape[0]
    left, right = rows[cols < panel.shape[1] * 0.05].mean(), rows[cols > panel.shape[1] * 0.95].mean()
    # read back from the picture: the line climbs from 0.01 / top to peak / top of the panel's height
    assert 1 - right / height == pytest.approx(peak / top, abs=0.05)
    assert 1 - left / height == pytest.approx(0.01 / top, abs=0.05)


def test_annotate_line_says_where_the_report_went(tmp_path) -> None:
    from camvideo.jobs import AnnotateReport, describe
    from camvideo.pipeline import PipelineStats

    png = tmp_path / "clip.cam.report.png"
    stats = PipelineStats(frames_written=10, wall=2.0)
    line = describe(AnnotateReport(tmp_path / "clip.mp4", tmp_path / "clip.cam.mp4", stats, report_png=png))
    assert line.endswith(f"report -> {png}") and "\n" not in line
    assert "report" not in describe(AnnotateReport(tmp_path / "clip.mp4", tmp_path / "clip.cam.mp4", stats))
