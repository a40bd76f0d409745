"""The control API between the daemon and its clients (tray, CLI, doctor).

:mod:`.schema` the typed status snapshot and the enums (states, commands, tray actions);
:mod:`.wire` framing, limits and where the API listens; :mod:`.server` the daemon's side;
:mod:`.client` the clients' side. Importing this package imports none of them (the tray
and ``jobtunnel --help`` stay cheap).
"""
