"""What the tests and the benchmarks share: servers, isolated users, the daemon as a process."""
