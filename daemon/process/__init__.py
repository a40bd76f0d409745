"""The daemon process: the driver that wires watcher, book, engine, store, scheduler and
control API, and the I/O pieces only it uses."""
