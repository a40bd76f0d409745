"""The SSH engine: tunnel supervisors, listeners, held clients, byte pumps, auth, host keys."""
