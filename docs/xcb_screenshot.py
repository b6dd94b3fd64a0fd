"""Does the desktop app really start on an X display? Run it on Xvfb and look at the screen.

Starts ``Xvfb`` (a 1600x1000 screen), runs the real ``camvideo live sample --duration N
--snapshot PATH`` on Qt's **xcb** platform (``QT_QPA_PLATFORM`` removed from the
environment, ``DISPLAY`` pointing at Xvfb), and while the app runs takes screenshots of the
X screen with ImageMagick's ``import -window root`` (what X shows, not what Qt thinks it
drew). It then checks the pixels of the camvideo window (found with ``xdotool``):

- the window is on the screen and not black or blank (it has the grey of the panel and
  the colours of the picture);
- the heatmap's colours are in it: saturated warm (JET red-orange) and cool (JET blue)
  pixels, each at least 0.5 % of the window (see :func:`heat_shares`);
- the app exits 0 and writes its snapshot.

The last good screenshot is cropped to the window and saved (``--out``; the README's
``docs/screenshot.png`` comes from ``python docs/xcb_screenshot.py --out docs/screenshot.png``).

Exit codes: 0 all checks passed; 1 a check failed (the reason on stderr); 77 cannot run
here (no Xvfb, ImageMagick or xdotool; Qt's xcb libraries missing) -- the test skips then.
Needs: ``sudo apt-get install xvfb imagemagick xdotool`` and the desktop app's system packages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SKIP = 77
SCREEN = (1600, 1000)


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """Xvfb on a free display number (it writes the number it took to a pipe: -displayfd)."""
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp"], pass_fds=(write,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        raise RuntimeError("Xvfb did not start")
    return proc, f":{number}"


def window_geometry(env: dict) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the visible camvideo window, or None while there is none."""
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^camvideo"], env=env,
                           capture_output=True, text=True, check=False)  # fmt: skip
    ids = found.stdout.split()
    if not ids:
        return None
    geometry = subprocess.run(["xdotool", "getwindowgeometry", "--shell", ids[-1]], env=env,
                              capture_output=True, text=True, check=False).stdout  # fmt: skip
    values = dict(line.split("=", 1) for line in geometry.split() if "=" in line)
    try:
        return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])
    except (KeyError, ValueError):
        return None


def screenshot(env: dict, path: Path) -> np.ndarray | None:
    """The whole X screen as RGB, through ImageMagick (reads the X server's framebuffer)."""
    done = subprocess.run(
        ["import", "-silent", "-window", "root", str(path)], env=env, capture_output=True, check=False
    )
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if done.returncode == 0 else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def heat_shares(window: np.ndarray) -> tuple[float, float]:
    """Shares of the heatmap's warm (JET red-orange) and cool (JET blue) pixels in the window.

    The heat is blended half and half with the picture, so its colours are judged by hue
    and saturation (OpenCV HSV, hue 0..180): warm = hue <= 15 or >= 170, cool = hue
    100..130, both saturated (S >= 130) and bright. The panel's greys and the black bars
    have no saturation."""
    hsv = cv2.cvtColor(np.ascontiguousarray(window), cv2.COLOR_RGB2HSV)
    h, s, v = (hsv[..., i].astype(np.int16) for i in range(3))
    warm = ((h <= 15) | (h >= 170)) & (s >= 130) & (v >= 130)
    cool = (h >= 100) & (h <= 130) & (s >= 130) & (v >= 100)
    return float(warm.mean()), float(cool.mean())


def check(window: np.ndarray) -> str | None:
    """None when the window looks like the app with its heatmap, else what is wrong."""
    if window.size == 0:
        return "the window has no pixels"
    if window.mean() < 20:
        return f"the window is black (mean level {window.mean():.1f})"
    if window.std() < 10:
        return f"the window is blank (one flat colour, std {window.std():.1f})"
    red, blue = heat_shares(window)
    if red < 0.005 or blue < 0.005:
        return f"no heatmap colours in the window (warm {red:.2%}, cool {blue:.2%} of its pixels)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="save the window's screenshot here (PNG)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds the app shows frames (default 8)")
    parser.add_argument("--timeout", type=float, default=240.0, help="give up after this long (model loading included)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="more options for camvideo live (after --)")
    args = parser.parse_args()
    missing = [tool for tool in ("Xvfb", "import", "xdotool", "camvideo") if shutil.which(tool) is None]
    if missing:
        print(
            f"cannot run: {', '.join(missing)} not installed (sudo apt-get install xvfb imagemagick xdotool)",
            file=sys.stderr,
        )
        return SKIP
    sys.path.insert(0, str(ROOT))
    from camvideo.cli.desktop import check_platform_libraries
    from camvideo.errors import CamvideoError

    try:
        check_platform_libraries({"DISPLAY": ":0"})
    except CamvideoError as err:
        print(f"cannot run: {err}", file=sys.stderr)
        return SKIP

    xvfb, display = start_xvfb()
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env |= {"DISPLAY": display, "XDG_SESSION_TYPE": "x11"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # the app's saved settings: a fresh start
            snapshot = tmp_path / "snapshot.png"
            extra = [a for a in args.extra if a != "--"]
            command = [
                "camvideo",
                "live",
                "sample",
                "--duration",
                str(args.duration),
                "--snapshot",
                str(snapshot),
                *extra,
            ]
            app = subprocess.Popen(
                command, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            best: tuple[float, np.ndarray, tuple[int, int, int, int]] | None = None
            first_seen: float | None = None
            problem = "the window never appeared"
            deadline = time.monotonic() + args.timeout
            while app.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
                geometry = window_geometry(env)
                if geometry is None:
                    continue
                first_seen = first_seen or time.monotonic()
                if time.monotonic() - first_seen < 2.0:  # let the model's first maps arrive
                    continue
                screen = screenshot(env, tmp_path / "screen.png")
                if screen is None:
                    problem = "ImageMagick could not read the X screen"
                    continue
                x, y, w, h = geometry
                window = screen[max(y, 0) : y + h, max(x, 0) : x + w]
                problem = check(window) or ""
                if os.environ.get("CAMVIDEO_XCB_DEBUG"):
                    cv2.imwrite(os.environ["CAMVIDEO_XCB_DEBUG"], cv2.cvtColor(window, cv2.COLOR_RGB2BGR))
                if not problem:
                    red, blue = heat_shares(window)
                    if best is None or red + blue > best[0]:
                        best = (red + blue, window, geometry)
            if app.poll() is None:
                app.kill()
                output = app.communicate()[0]
                print(f"FAIL: camvideo live did not finish within {args.timeout:.0f} s\n{output}", file=sys.stderr)
                return 1
            output = app.communicate()[0]
            if app.returncode != 0:
                print(f"FAIL: camvideo live exited {app.returncode}\n{output}", file=sys.stderr)
                return 1
            if best is None:
                print(f"FAIL: {problem}\n{output}", file=sys.stderr)
                return 1
            if not snapshot.is_file():
                print(f"FAIL: the app wrote no snapshot\n{output}", file=sys.stderr)
                return 1
            _, window, (x, y, w, h) = best
            red, blue = heat_shares(window)
            print(f"OK: xcb window {w}x{h} at ({x}, {y}) on a {SCREEN[0]}x{SCREEN[1]} Xvfb screen; "
                  f"heat colours: warm {red:.1%}, cool {blue:.1%} of its pixels; mean level {window.mean():.0f}")  # fmt: skip
            if args.out:
                cv2.imwrite(str(args.out), cv2.cvtColor(window, cv2.COLOR_RGB2BGR))
                print(f"saved {args.out}")
            return 0
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
