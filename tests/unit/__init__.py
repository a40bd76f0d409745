"""Pure logic and single modules: no sshd, no daemon process."""
