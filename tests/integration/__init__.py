"""Against real things: OpenSSH sshd on loopback, watchdog on real folders, real sockets."""
