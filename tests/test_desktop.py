"""The desktop app's platform check: Qt's plugin libraries found (or not) before Qt loads.

The references are independent of camvideo's ELF reader: ``readelf -d`` (binutils) for the
``DT_NEEDED`` lists, and the real dynamic loader for what exists. A library that does not
exist is injected to see the check fail, in the function and through the real CLI (a copy
of PyQt6's xcb plugin whose needed library was renamed to one that cannot exist).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camvideo.cli.desktop import (
    PACKAGES,
    check_platform_libraries,
    check_x_display,
    elf_dynamic,
    missing_libraries,
    platforms_tried,
    pyqt_plugin,
    system_libraries,
)
from camvideo.errors import CamvideoError

ROOT = Path(__file__).resolve().parent.parent
NO_SUCH_LIBRARY = "libcamvideo-no-such-library.so.3"
XCB = pyqt_plugin("xcb")
needs_plugin = pytest.mark.skipif(XCB is None or not sys.platform.startswith("linux"), reason="no PyQt6 xcb plugin")


def readelf_needed(path: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def os_release(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "os-release"
    path.write_text(text)
    return path


def hiding(*names: str):
    """A loader that dlopens for real but hides ``names``, failing as the loader does."""

    def load(name: str) -> None:
        if name in names:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        import ctypes

        ctypes.CDLL(name)

    return load


@needs_plugin
def test_plugin_found_without_importing_qt() -> None:
    code = "import sys; from camvideo.cli.desktop import pyqt_plugin, check_platform_libraries; " \
           "p = pyqt_plugin('xcb'); check_platform_libraries({'QT_QPA_PLATFORM': 'offscreen'}); " \
           "print(p, 'PyQt6' in sys.modules)"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    path, imported = out.split()
    assert Path(path).name == "libqxcb.so" and Path(path).is_file() and imported == "False"


@needs_plugin
@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils' readelf not installed")
def test_elf_reader_matches_readelf() -> None:
    lib = XCB.parent.parent.parent / "lib"
    for path in [XCB, lib / "libQt6XcbQpa.so.6", lib / "libQt6Gui.so.6", Path(sys.executable).resolve()]:
        if path.is_file():
            assert elf_dynamic(path)[0] == readelf_needed(path), path
    assert elf_dynamic(XCB)[1] == ["$ORIGIN/../../lib"]
    wanted = system_libraries(XCB)
    # the xcb libraries the issue found missing come from libQt6XcbQpa, one level down
    assert {"libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0"} <= set(wanted)
    assert not any(name.startswith("libQt6") for name in wanted)  # bundled with PyQt6, not checked


def test_not_elf_is_refused(tmp_path) -> None:
    text = tmp_path / "libqxcb.so"
    text.write_text("not a library")
    with pytest.raises(ValueError):
        elf_dynamic(text)
    # an unreadable plugin passes the check: Qt gets its own say
    check_platform_libraries({"DISPLAY": ":0"}, plugin=lambda _: text)


@needs_plugin
def test_a_library_that_does_not_exist_is_named() -> None:
    assert missing_libraries([NO_SUCH_LIBRARY, "libc.so.6"]) == [NO_SUCH_LIBRARY]  # the real loader
    with pytest.raises(CamvideoError) as err:
        check_platform_libraries({"DISPLAY": ":0"}, extra={"xcb": (NO_SUCH_LIBRARY,)})
    message = str(err.value)
    assert "\n" not in message and NO_SUCH_LIBRARY in message and "xcb" in message
    assert "QT_QPA_PLATFORM=offscreen" in message and "apt-file search" in message


@needs_plugin
def test_missing_xcb_libraries_give_the_install_command(tmp_path) -> None:
    load = hiding("libxcb-icccm.so.4", "libxcb-keysyms.so.1")
    debian = os_release(tmp_path, 'PRETTY_NAME="Ubuntu 24.04"\nID=ubuntu\nID_LIKE=debian\n')
    with pytest.raises(CamvideoError) as err:
        check_platform_libraries({"DISPLAY": ":0"}, load=load, os_release=debian)
    message = str(err.value)
    assert "libxcb-icccm.so.4 and libxcb-keysyms.so.1" in message
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1 " in message and "dnf" not in message
    fedora = os_release(tmp_path, "ID=fedora\n")
    with pytest.raises(CamvideoError, match=r"sudo dnf install xcb-util-wm xcb-util-keysyms \("):
        check_platform_libraries({"DISPLAY": ":0"}, load=load, os_release=fedora)
    with pytest.raises(CamvideoError, match=r"apt-get install libxcb-icccm4 libxcb-keysyms1 \(Debian/Ubuntu\) or "
                                            r"sudo dnf install xcb-util-wm xcb-util-keysyms \(Fedora\)"):  # fmt: skip
        check_platform_libraries({"DISPLAY": ":0"}, load=load, os_release=tmp_path / "none")
    # offscreen does not need the xcb libraries
    check_platform_libraries({"QT_QPA_PLATFORM": "offscreen"}, load=load)


def test_a_missing_dependency_is_named_not_its_parent() -> None:
    def load(name: str) -> None:
        if name == "libxcb-icccm.so.4":
            raise OSError("libxcb.so.1: cannot open shared object file: No such file or directory")

    assert missing_libraries(["libxcb-icccm.so.4", "libc.so.6"], load) == ["libxcb.so.1"]


def test_platforms_tried() -> None:
    assert platforms_tried({"DISPLAY": ":0"}) == ["xcb"]
    assert platforms_tried({"QT_QPA_PLATFORM": "offscreen"}) == ["offscreen"]
    assert platforms_tried({"QT_QPA_PLATFORM": "wayland;xcb:nomitshm"}) == ["wayland", "xcb"]
    assert platforms_tried({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"}) == [
        "wayland",
        "xcb",
    ]


def test_every_mapped_package_name_is_plausible() -> None:
    for soname, (debian, fedora) in PACKAGES.items():
        assert soname.startswith("lib") and ".so." in soname
        assert re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", debian) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]+", fedora)


@needs_plugin
def test_cli_refuses_in_one_line_when_a_library_is_missing(tmp_path) -> None:
    """The real ``camvideo live`` with a PyQt6 whose xcb plugin needs a library that does not exist.

    The fake package is a copy of PyQt6's own ``libqxcb.so`` with one DT_NEEDED name changed
    (same length, so the ELF stays valid) and Qt's real libraries beside it."""
    real = Path(importlib.util.find_spec("PyQt6").submodule_search_locations[0])
    fake = tmp_path / "site" / "PyQt6"
    (fake / "Qt6" / "plugins" / "platforms").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "Qt6" / "lib").symlink_to(real / "Qt6" / "lib")
    data = (real / "Qt6" / "plugins" / "platforms" / "libqxcb.so").read_bytes()
    assert data.count(b"libxcb-cursor.so.0\0") == 1
    (fake / "Qt6" / "plugins" / "platforms" / "libqxcb.so").write_bytes(
        data.replace(b"libxcb-cursor.so.0\0", b"libxcb-cursoX.so.0\0"))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env |= {"DISPLAY": ":97", "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{ROOT}", "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run(["camvideo", "live", "sample", "--duration", "1"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("camvideo: error: the desktop app cannot start"), done.stderr
    assert "libxcb-cursoX.so.0" in lines[0] and "Traceback" not in done.stderr


def unused_display() -> str:
    """A display number with no X server: no socket file, no lock, no abstract socket."""
    try:
        sockets = Path("/proc/net/unix").read_text(errors="replace")
    except OSError:
        sockets = ""
    for n in range(171, 400):
        if not any(Path(p).exists() for p in (f"/tmp/.X11-unix/X{n}", f"/tmp/.X{n}-lock")) \
                and f"/tmp/.X11-unix/X{n}\n" not in sockets:  # fmt: skip
            return f":{n}"
    pytest.skip("no unused X display number")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 on Linux")
def test_cli_refuses_a_display_where_no_x_server_answers(tmp_path) -> None:
    """DISPLAY set but nothing there: Qt used to abort (rc 134) with a message about xcb-cursor."""
    display = unused_display()
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env |= {"DISPLAY": display, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run(["camvideo", "live", "sample", "--duration", "2"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    if lines and "the desktop app cannot start" in lines[0]:
        pytest.skip("Qt's xcb libraries are missing here (the library check's case)")
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"camvideo: error: cannot connect to the X display {display} ("), (
        done.stderr
    )
    assert "QT_QPA_PLATFORM=offscreen" in lines[0] and "Traceback" not in done.stderr
    # offscreen, a Wayland-first session or no DISPLAY are not this check's business
    check_x_display({"DISPLAY": display, "QT_QPA_PLATFORM": "offscreen"})
    check_x_display({"DISPLAY": display, "WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"})
    check_x_display({})
    with pytest.raises(CamvideoError, match="cannot connect to the X display"):
        check_x_display({"DISPLAY": display, "QT_QPA_PLATFORM": "xcb"})
    check_x_display({"DISPLAY": display}, library=NO_SUCH_LIBRARY)  # no libxcb: the library check says so


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")
@pytest.mark.timeout(120)
def test_a_running_xvfb_display_passes_the_x_check() -> None:
    read, write = os.pipe()
    # -noreset: by default Xvfb resets when its last client leaves, and refuses connections
    # for that moment: the second check below would race the first one's disconnect.
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "320x240x24", "-nolisten", "tcp",
                               "-noreset"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(write)
    try:
        with os.fdopen(read) as ready:
            number = ready.readline().strip()  # written once the server accepts connections
        assert number.isdigit(), "Xvfb did not start"
        # Xvfb writes its number when it listens; on a loaded machine its first connection
        # can still be refused for a moment: wait for it (bounded), then both checks pass.
        deadline = time.monotonic() + 30
        while True:
            try:
                check_x_display({"DISPLAY": f":{number}"})
                break
            except CamvideoError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        check_x_display({"DISPLAY": f":{number}", "QT_QPA_PLATFORM": "xcb"})
    finally:
        server.terminate()
        server.wait(timeout=30)
