"""Before Qt starts: will its X11 (xcb) platform plugin load? If not, say which Debian packages to add.

Qt 5's xcb plugin needs X libraries a minimal Debian lacks (libxcb-icccm4, libxcb-keysyms1,
libxcb-xinerama0 on a stock bookworm with X). When one is missing Qt prints "Could not load the Qt
platform plugin "xcb"" and *aborts* (SIGABRT, a core file, no exit status to act on). So the panel
checks first, with the loader Qt would use (``dlopen`` of each library by its soname), and exits 2
naming the packages. Also checked: an X display to connect to (else Qt aborts the same way).
Imports no Qt: it runs before the QApplication exists.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Mapping

#: shared libraries Qt 5.15's libqxcb.so and libQt5XcbQpa.so load (ldd) -> the Debian package with it
XCB_LIBRARIES = {
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
}


def loadable(soname: str) -> bool:
    """True if the dynamic loader finds ``soname`` (as it will when Qt loads its plugin)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def uses_xcb(environ: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Qt 5 on Linux takes xcb unless QT_QPA_PLATFORM names another plugin (offscreen, wayland, …)."""
    if not platform.startswith("linux"):
        return False
    wanted = {p.split(":")[0].strip() for p in environ.get("QT_QPA_PLATFORM", "").split(";") if p.strip()}
    return not wanted or wanted == {"xcb"}


def missing_xcb_packages(is_loadable: Callable[[str], bool] | None = None) -> list[str]:
    """The Debian packages of the xcb plugin's libraries the loader does not find (in table order)."""
    check = is_loadable or loadable
    return [package for soname, package in XCB_LIBRARIES.items() if not check(soname)]


def platform_problem(environ: Mapping[str, str], is_loadable: Callable[[str], bool] | None = None) -> str:
    """Why Qt would abort at start on this machine ("" when it should start); ``is_loadable``: the
    library check (default :func:`loadable`)."""
    if not uses_xcb(environ):
        return ""
    missing = missing_xcb_packages(is_loadable)
    if missing:
        return (
            "Qt's X11 platform plugin (xcb) cannot load: system libraries are missing. On Debian/Ubuntu: "
            f"sudo apt-get install {' '.join(missing)}   (or run with QT_QPA_PLATFORM=offscreen for no window)"
        )
    if not environ.get("DISPLAY") and not environ.get("WAYLAND_DISPLAY"):
        return (
            "no X display: DISPLAY is not set (log in to a desktop, use ssh -X, or run with "
            "QT_QPA_PLATFORM=offscreen for no window)"
        )
    return ""
