"""jobtunnel's system-tray app: a client of the daemon's control API.

Entry point: ``jobtunnel tray`` (or ``python -m jobtunnel.tray``), i.e.
:func:`jobtunnel.tray.app.run_tray`. The menu (:mod:`.menu`) and icon (:mod:`.icon`) are
pure functions of a status snapshot; :mod:`.backend` says whether this machine's tray
has a menu at all. Importing this package does not import pystray.
"""
