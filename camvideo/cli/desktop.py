"""Will Qt's platform plugin load? Checked before PyQt6 is imported.

When its platform plugin cannot be loaded, Qt aborts the whole process (SIGABRT, exit
134), and its hint names the wrong package: on a Debian machine with ``libxcb-cursor0``
installed it still asked for it, while ``libxcb-icccm4`` and ``libxcb-keysyms1`` were the
ones missing. So ``camvideo live`` does what Qt's loader will do, earlier and with a useful
answer:

1. find PyQt6's plugin file (``PyQt6/Qt6/plugins/platforms/libqxcb.so``) with
   :func:`importlib.util.find_spec`, without importing PyQt6;
2. read the ``DT_NEEDED`` entries of its ELF dynamic section, and of the Qt libraries
   bundled beside it (found through their ``RUNPATH``, ``$ORIGIN`` expanded), recursively;
3. ``dlopen`` every library that is not bundled (:class:`ctypes.CDLL`), which searches
   exactly where the dynamic loader will search when Qt loads the plugin, plus the
   libraries Qt opens by name at run time (``libxcb-cursor.so.0``);
4. map the missing ones to Debian/Ubuntu and Fedora package names and say, in one line,
   which command installs them.

Anything unexpected (no PyQt6, an unreadable or non-ELF file, another OS) passes the check:
Qt then gets its own say. No process is started (no ``ldd``): everything is read in Python.
"""

from __future__ import annotations

import ctypes
import importlib.util
import mmap
import os
import re
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import CamvideoError

# soname -> (Debian/Ubuntu package, Fedora package). Debian names are those of bookworm and
# Ubuntu 22.04/24.04 (libglib2.0-0 is a transitional name for libglib2.0-0t64 on 24.04).
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libXau.so.6": ("libxau6", "libXau"),
    "libXdmcp.so.6": ("libxdmcp6", "libXdmcp"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libGLdispatch.so.0": ("libglvnd0", "libglvnd"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libz.so.1": ("zlib1g", "zlib"),
    "libpng16.so.16": ("libpng16-16", "libpng"),
    "libexpat.so.1": ("libexpat1", "expat"),
    "libzstd.so.1": ("libzstd1", "libzstd"),
    "libstdc++.so.6": ("libstdc++6", "libstdc++"),
    "libgcc_s.so.1": ("libgcc-s1", "libgcc"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
}

# Libraries a platform plugin opens by name at run time (not in its DT_NEEDED on every Qt
# version): Qt 6.5+ on xcb refuses to start without libxcb-cursor.
RUNTIME_LIBRARIES: dict[str, tuple[str, ...]] = {"xcb": ("libxcb-cursor.so.0",)}

_DT_NEEDED, _DT_RPATH, _DT_RUNPATH = 1, 15, 29
_SHT_DYNAMIC = 6
_NOT_FOUND = re.compile(r"([^\s:]+\.so[.\w-]*): cannot open shared object file")

Loader = Callable[[str], None]


def pyqt_plugin(platform: str) -> Path | None:
    """PyQt6's plugin file for a Qt platform (``xcb`` -> ``.../platforms/libqxcb.so``), without importing PyQt6."""
    try:
        spec = importlib.util.find_spec("PyQt6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    names = [f"libq{platform}.so"] + ([f"libq{platform}-generic.so"] if platform.startswith("wayland") else [])
    for folder in spec.submodule_search_locations:
        for name in names:
            path = Path(folder) / "Qt6" / "plugins" / "platforms" / name
            if path.is_file():
                return path
    return None


def elf_dynamic(path: Path) -> tuple[list[str], list[str]]:
    """The ``DT_NEEDED`` names and the ``RUNPATH``/``RPATH`` folders of an ELF file.

    Reads the section headers, finds the ``SHT_DYNAMIC`` section and its string table
    (``sh_link``), and decodes the (tag, value) pairs; 32/64-bit, either byte order.
    Raises ValueError when the file is not an ELF file with a dynamic section.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
            raise ValueError(f"{path}: not an ELF file")
        wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
        shoff, shentsize, shnum = (
            (struct.unpack_from(order + "Q", data, 0x28)[0], *struct.unpack_from(order + "HH", data, 0x3A))
            if wide
            else (struct.unpack_from(order + "I", data, 0x20)[0], *struct.unpack_from(order + "HH", data, 0x2E))
        )
        # (sh_type, sh_offset, sh_size, sh_link) of every section header
        section = order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
        headers = [struct.unpack_from(section, data, shoff + i * shentsize) for i in range(shnum)]
        dynamic = [h for h in headers if h[1] == _SHT_DYNAMIC]
        if not dynamic:
            raise ValueError(f"{path}: no dynamic section")
        _, _, _, _, dyn_offset, dyn_size, link, _, _, _ = dynamic[0]
        str_offset = headers[link][4]
        entry = order + ("qQ" if wide else "iI")
        step = struct.calcsize(entry)

        def string(offset: int) -> str:
            start = str_offset + offset
            return bytes(data[start : data.find(b"\0", start)]).decode("utf-8", "replace")

        needed: list[str] = []
        paths: list[str] = []
        for at in range(dyn_offset, dyn_offset + dyn_size - step + 1, step):
            tag, value = struct.unpack_from(entry, data, at)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                needed.append(string(value))
            elif tag in (_DT_RPATH, _DT_RUNPATH):
                paths.extend(p for p in string(value).split(":") if p)
        return needed, paths


def dlopen(name: str) -> None:
    """Load a library the way the dynamic loader will for Qt (raises OSError when it cannot)."""
    ctypes.CDLL(name)


def system_libraries(plugin: Path) -> list[str]:
    """The libraries the plugin needs from the system: its ELF dependencies, recursively through
    the Qt libraries bundled with PyQt6 (which are not checked themselves: they come with it)."""
    wanted: dict[str, None] = {}
    seen: set[Path] = set()
    todo = [plugin.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        needed, runpaths = elf_dynamic(path)
        folders = [
            Path(p.replace("$ORIGIN", str(path.parent)).replace("${ORIGIN}", str(path.parent))) for p in runpaths
        ]
        for name in needed:
            bundled = next((folder / name for folder in folders if (folder / name).is_file()), None)
            if bundled is not None:
                todo.append(bundled.resolve())
            else:
                wanted.setdefault(name)
    return list(wanted)


def missing_libraries(names: Iterable[str], load: Loader = dlopen) -> list[str]:
    """The libraries among ``names`` (sonames) that cannot be loaded, and any library they
    need that is missing (named by the loader's message), in order, each once."""
    missing: dict[str, None] = {}
    for name in names:
        try:
            load(name)
        except OSError as err:
            found = _NOT_FOUND.findall(str(err))
            for lib in found or [name]:
                missing.setdefault(os.path.basename(lib))
    return list(missing)


def platforms_tried(environ: Mapping[str, str]) -> list[str]:
    """The Qt platforms Qt will try, in order (``QT_QPA_PLATFORM`` is a ``;`` list with ``:`` options)."""
    chosen = environ.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        return [p.split(":")[0].strip() for p in chosen.split(";") if p.split(":")[0].strip()]
    if environ.get("WAYLAND_DISPLAY") and (environ.get("XDG_SESSION_TYPE") == "wayland" or not environ.get("DISPLAY")):
        return ["wayland", "xcb"]  # Qt prefers Wayland in a Wayland session and falls back to xcb
    return ["xcb"]


def package_family(os_release: Path = Path("/etc/os-release")) -> str | None:
    """``debian`` (apt-get), ``fedora`` (dnf) or None, from ``ID`` and ``ID_LIKE``."""
    try:
        text = os_release.read_text(errors="replace")
    except OSError:
        return None
    ids: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids += value.strip().strip("\"'").lower().split()
    if any(i in ("debian", "ubuntu") for i in ids):
        return "debian"
    if any(i in ("fedora", "rhel", "centos") for i in ids):
        return "fedora"
    return None


def install_command(libraries: Sequence[str], family: str | None) -> str:
    """The command that installs the packages providing ``libraries`` (both families when unknown)."""
    debian = list(dict.fromkeys(PACKAGES[lib][0] for lib in libraries if lib in PACKAGES))
    fedora = list(dict.fromkeys(PACKAGES[lib][1] for lib in libraries if lib in PACKAGES))
    apt = f"sudo apt-get install {' '.join(debian)}" if debian else ""
    dnf = f"sudo dnf install {' '.join(fedora)}" if fedora else ""
    if family == "debian" or (apt and not dnf):
        return apt
    if family == "fedora":
        return dnf
    return f"{apt} (Debian/Ubuntu) or {dnf} (Fedora)" if apt else ""


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def missing_message(platform: str, missing: Sequence[str], family: str | None) -> str:
    """One line: what is missing, the command that installs it, and the way around it."""
    command = install_command(missing, family)
    unknown = [lib for lib in missing if lib not in PACKAGES]
    fix = f"install {'it' if len(missing) == 1 else 'them'} with: {command}" if command else ""
    if unknown:
        extra = f"find the package{'s' if len(unknown) > 1 else ''} providing {_listed(unknown)} (apt-file search, dnf provides)"
        fix = f"{fix}; {extra}" if fix else extra
    verb = "is" if len(missing) == 1 else "are"
    return (
        f"the desktop app cannot start: Qt's {platform} platform plugin needs {_listed(missing)}, which "
        f"{verb} not installed; {fix} (or run without a window: QT_QPA_PLATFORM=offscreen with --duration and "
        f"--snapshot or --record)"
    )


def check_platform_libraries(
    environ: Mapping[str, str] | None = None,
    *,
    plugin: Callable[[str], Path | None] = pyqt_plugin,
    extra: Mapping[str, Sequence[str]] = RUNTIME_LIBRARIES,
    load: Loader = dlopen,
    os_release: Path = Path("/etc/os-release"),
) -> None:
    """Raise :class:`CamvideoError` (exit 2) when no platform Qt will try can load its plugin.

    ``plugin``, ``extra`` and ``load`` are the seams the tests use (a library that does not
    exist); the defaults are PyQt6's plugin files, the libraries Qt opens at run time, dlopen.
    """
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return
    failures: list[tuple[str, list[str]]] = []
    for platform in platforms_tried(environ):
        path = plugin(platform)
        if path is None:
            return  # not a plugin file we know how to read: Qt has its own say
        try:
            wanted = system_libraries(path)
        except (OSError, ValueError, struct.error, IndexError):
            return
        missing = missing_libraries([*wanted, *extra.get(platform, ())], load)
        if not missing:
            return
        failures.append((platform, missing))
    if failures:
        # the platform the user most likely needs to fix: xcb when it was tried, else the first
        platform, missing = next((f for f in failures if f[0] == "xcb"), failures[0])
        raise CamvideoError(missing_message(platform, missing, package_family(os_release)))


#: xcb_connection_has_error() codes (xcb.h), for the message.
XCB_ERRORS = {
    1: "no X server answers there",
    2: "an extension it needs is missing",
    3: "out of memory",
    4: "a request too long",
    5: "the display name cannot be parsed",
    6: "no such screen on that server",
    7: "file descriptor passing failed",
}


def check_x_display(environ: Mapping[str, str] | None = None, library: str = "libxcb.so.1") -> None:
    """Raise :class:`CamvideoError` (exit 2) when Qt will use xcb and no X server answers at DISPLAY.

    ``DISPLAY`` being set says nothing about a server being there (a closed ssh -X session,
    a stopped Xvfb): Qt's xcb plugin then aborts the process (SIGABRT) with a message about
    xcb-cursor. Connecting with libxcb itself (:func:`ctypes.CDLL`, no Qt) tells. Call it
    after :func:`check_platform_libraries`: a missing ``libxcb.so.1`` is that check's case,
    and passes this one.
    """
    environ = os.environ if environ is None else environ
    display = environ.get("DISPLAY", "")
    platforms = platforms_tried(environ)
    if not display or not platforms or platforms[0] != "xcb":
        return
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return
    try:
        xcb = ctypes.CDLL(library)
    except OSError:
        return
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.restype = ctypes.c_int
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.restype = None
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    # the name from environ, not libxcb's own getenv: the same thing in the CLI, testable
    connection = xcb.xcb_connect(display.encode(), None)
    try:
        error = xcb.xcb_connection_has_error(connection) if connection else 1
    finally:
        if connection:
            xcb.xcb_disconnect(connection)  # also frees the error connection libxcb hands back
    if error:
        why = XCB_ERRORS.get(error, f"xcb error {error}")
        raise CamvideoError(
            f"cannot connect to the X display {display} ({why}); start the app on a running desktop "
            f"(or ssh -X), or set QT_QPA_PLATFORM=offscreen to run without a window (with --duration and "
            f"--snapshot or --record)"
        )
