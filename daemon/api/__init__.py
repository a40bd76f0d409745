"""The control API between the daemon and its clients (tray, CLI, doctor)."""
