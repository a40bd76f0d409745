"""Which pystray backend the tray gets here, and whether it has a usable menu.

pystray picks appindicator -> gtk -> xorg on Linux (``PYSTRAY_BACKEND`` forces one), the
native backend on Windows and macOS. The xorg backend shows an icon with no menu and gets
no clicks, so the tray is then only a status light; :func:`describe` says so, for the
tray's log and for ``jobtunnel doctor``. It checks without importing pystray (which,
without a display and without PyGObject, raises ``Xlib.error.DisplayNameError``).

The GTK backends (appindicator, gtk) build a D-Bus notifier while they initialise, which
raises when the desktop's notification service is registered but fails to start, and
hide its notification on exit, which raises where there is none: :func:`guard_notifier`
makes both degrade to "no notifications" instead of ending the tray.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["INSTALL_HINT", "describe", "guard_notifier", "import_pystray"]

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install PyGObject for a menu: apt-get install libgirepository1.0-dev libcairo2-dev "
    "pkg-config gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1, then "
    "pip install 'jobtunnel[tray]'"
)


def _gi_has(namespace: str, version: str) -> bool:
    try:
        import gi

        gi.require_version(namespace, version)
    except (ImportError, ValueError):
        return False
    return True


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def describe() -> tuple[str, bool, str]:
    """``(backend_name, usable_menu, why)`` for this machine and environment."""
    forced = os.environ.get("PYSTRAY_BACKEND")
    if sys.platform == "win32" and not forced:
        return "win32", True, "the native Windows notification-area icon"
    if sys.platform == "darwin" and not forced:
        return "darwin", True, "the native macOS status-bar item"
    gtk = _gi_has("Gtk", "3.0")
    indicator = _gi_has("AyatanaAppIndicator3", "0.1") or _gi_has("AppIndicator3", "0.1")
    if forced == "dummy":
        return "dummy", False, "PYSTRAY_BACKEND=dummy shows nothing"
    if forced in ("win32", "darwin"):
        return forced, True, f"PYSTRAY_BACKEND={forced}"
    if forced == "xorg" or (not forced and not gtk):
        why = "PYSTRAY_BACKEND=xorg" if forced else "PyGObject (gi) with GTK 3 is not available"
        return "xorg", False, f"{why}: icon only, no menu and no clicks; {INSTALL_HINT}"
    if not _has_display():
        return forced or "appindicator", False, "no display (DISPLAY / WAYLAND_DISPLAY unset)"
    if forced == "gtk" or (forced != "appindicator" and not indicator):
        if not gtk:
            return "gtk", False, f"PyGObject (gi) with GTK 3 is not available; {INSTALL_HINT}"
        return "gtk", True, "GTK status icon (needs an XEmbed system tray)"
    if not (gtk and indicator):
        return "appindicator", False, f"AppIndicator typelib missing; {INSTALL_HINT}"
    return "appindicator", True, "AppIndicator (StatusNotifier, or an XEmbed tray as fallback)"


def import_pystray() -> Any:
    """``import pystray``, with every failure (no display, no backend) as ImportError."""
    try:
        import pystray
    except ImportError:
        raise
    except Exception as exc:  # Xlib.error.DisplayNameError and friends
        raise ImportError(f"pystray cannot start here: {type(exc).__name__}: {exc}") from exc
    return pystray


def guard_notifier(on_failure: Callable[[str], None], module: ModuleType | None = None) -> None:
    """Wrap pystray's D-Bus ``Notifier`` (in ``module``, by default pystray's
    ``_util.notify_dbus``) so that a failure to create it calls ``on_failure(why)`` and
    leaves a notifier that refuses to notify, and hiding a notification never raises."""
    target: Any = module
    if target is None:
        from pystray._util import notify_dbus

        target = notify_dbus
    real = target.Notifier
    if getattr(real, "guarded", False):
        return

    class GuardedNotifier:
        guarded = True

        def __init__(self) -> None:
            self.why: str | None = None
            self.real: Any = None
            try:
                self.real = real()
            except Exception as exc:  # GLib.Error from the D-Bus activation, mostly
                self.why = f"the notification service failed to start: {exc}"
                on_failure(self.why)

        def notify(self, title: str, message: str, icon: str) -> None:
            if self.real is None:
                raise RuntimeError(self.why or "no notification service")
            self.real.notify(title, message, icon)

        def hide(self) -> None:
            if self.real is None:
                return
            try:
                self.real.hide()
            except Exception as exc:  # pystray hides on exit, service or not
                log.debug("hiding the notification failed: %s", exc)

    target.Notifier = GuardedNotifier
