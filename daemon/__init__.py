"""jobtunnel's service side: detection, tunnels, configuration and the command line."""

__version__ = "0.1.0"
