"""The real daemon (and tray) as processes, driven through the CLI and the control API."""
