"""jobtunnel's system-tray app: a client of the daemon's control API (not built yet)."""
