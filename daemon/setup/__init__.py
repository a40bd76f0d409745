"""Setup tools: jobtunnel's key, PuTTY keys, first run, doctor, login services."""
