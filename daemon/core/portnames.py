"""What a forwarded remote port usually serves on a cluster, for ``status`` and the tray.

A name the user gave in the config (``tunnels.forwards`` tables) wins; otherwise the port's
well-known service on Rescale's clusters and in the tools engineers run there. Pure.
"""

from __future__ import annotations

__all__ = ["WELL_KNOWN", "port_name"]

WELL_KNOWN: dict[int, str] = {
    22: "SSH",
    3000: "Grafana",
    4040: "Spark UI",
    5000: "Flask",
    5900: "VNC",
    5901: "VNC",
    5902: "VNC",
    6006: "TensorBoard",
    6080: "noVNC",
    7860: "Gradio",
    8050: "Dash",
    8080: "code-server",
    8265: "Ray dashboard",
    8501: "Streamlit",
    8787: "RStudio",
    8888: "Jupyter",
    8889: "Jupyter",
    9090: "Prometheus",
    11111: "ParaView",
    47827: "STAR-CCM+",
}


def port_name(remote_port: int | None, given: str | None = None) -> str | None:
    """The forward's name: ``given`` (from the config), else the port's usual service."""
    if given:
        return given
    return WELL_KNOWN.get(remote_port) if remote_port is not None else None
